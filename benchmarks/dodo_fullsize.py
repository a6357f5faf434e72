"""doit file for the full-size no-op benchmark: the real stages' tasks, stand-in bodies."""

import dataclasses

from dodo import DOIT_CONFIG  # noqa: F401
from tasks.pipeline import STAGES, make_tasks


def _fullsize(stage):
    stand_in = dataclasses.replace(stage, module="benchmarks.fullsize_stages")

    def create_task():
        yield from make_tasks(stand_in)

    return create_task


globals().update({f"task_{stage.name}": _fullsize(stage) for stage in STAGES})
