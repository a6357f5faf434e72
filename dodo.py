"""doit entry point: configuration and the stage task creators, nothing else (see tasks/)."""

from tasks.base import task_base  # noqa: F401
from tasks.dataset import task_data  # noqa: F401
from tasks.evaluate import task_evaluate  # noqa: F401
from tasks.export import task_export  # noqa: F401
from tasks.finetune import task_finetune  # noqa: F401
from tasks.paths import DOIT_DB
from tasks.quantize import task_quantize  # noqa: F401
from tasks.smoke import task_smoke  # noqa: F401
from tasks.ui import Reporter

DOIT_CONFIG = {
    "default_tasks": ["data", "base", "quantize", "finetune", "export", "smoke", "evaluate"],
    "backend": "sqlite3",
    "dep_file": DOIT_DB,
    "reporter": Reporter,
    "verbosity": 2,
}
