"""doit file for the full-size no-op benchmark: the real stages' tasks, stand-in bodies."""

import dataclasses

from dodo import DOIT_CONFIG  # noqa: F401
from tasks import base, dataset, evaluate, export, finetune, quantize, smoke
from tasks.stage import make_task


def _fullsize(module):
    stage = dataclasses.replace(module.STAGE, module="benchmarks.fullsize_stages")
    return lambda: make_task(stage)


task_data, task_base, task_quantize = _fullsize(dataset), _fullsize(base), _fullsize(quantize)
task_finetune, task_export, task_smoke = _fullsize(finetune), _fullsize(export), _fullsize(smoke)
task_evaluate = _fullsize(evaluate)
