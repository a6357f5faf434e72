"""doit entry point: configuration and the stage task creators, nothing else (see tasks/)."""

from tasks.base import task_base  # noqa: F401
from tasks.dataset import task_data  # noqa: F401
from tasks.evaluate import task_evaluate  # noqa: F401
from tasks.export import task_export  # noqa: F401
from tasks.finetune import task_finetune  # noqa: F401
from tasks.paths import DOIT_DB
from tasks.quantize import task_quantize  # noqa: F401
from tasks.register import in_default_build, task_register  # noqa: F401
from tasks.smoke import task_smoke  # noqa: F401
from tasks.ui import Reporter

DOIT_CONFIG = {
    # register joins the default build once params name an Azure ML workspace (azure.*).
    "default_tasks": ["data", "base", "quantize", "finetune", "export", "smoke", "evaluate"]
    + (["register"] if in_default_build() else []),
    "backend": "sqlite3",
    "dep_file": DOIT_DB,
    "reporter": Reporter,
    "verbosity": 2,
}
