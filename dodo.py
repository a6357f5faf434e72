"""doit entry point: configuration and the stage task creators, nothing else (see tasks/pipeline.py)."""

from tasks.cli.reporter import Reporter
from tasks.paths import DOIT_DB
from tasks.pipeline import default_tasks, doit_task_creators

globals().update(doit_task_creators())  # task_data, task_base, ... in build order

DOIT_CONFIG = {
    # register joins the default build once params name an Azure ML workspace (azure.*).
    "default_tasks": default_tasks(),
    "backend": "sqlite3",
    "dep_file": DOIT_DB,
    "reporter": Reporter,
    "verbosity": 2,
}
