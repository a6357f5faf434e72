"""The stages in build order, the project they build, and the doit tasks made from them.

This is the one list of stages: dodo.py, the command line and the tests read it from here. A new
stage is a module under tasks/stages/ (a `STAGE` and a `run()`) and one line below.
"""

from __future__ import annotations

import difflib
import functools
import os

from tasks.build.runner import run_stage
from tasks.build.uptodate import UpToDate
from tasks.params import ParamsError, load_params
from tasks.paths import Paths, find_root
from tasks.stages import base, data, evaluate, export, finetune, quantize, register, smoke

STAGES = tuple(m.STAGE for m in (data, base, quantize, finetune, export, smoke, evaluate, register))
BY_NAME = {stage.name: stage for stage in STAGES}
PARAMS_ENV = "LAB_PARAMS"  # another params file (relative to the project), e.g. params/phi35-h100.yaml


def _check_stage_names(params) -> None:
    """Params that name stages (jobs.executor) must name real ones."""
    for name in params.jobs.executor:
        if name not in BY_NAME:
            close = difflib.get_close_matches(name, list(BY_NAME), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ParamsError(f"params.yaml: jobs.executor.{name}: no such stage{hint}; stages: {', '.join(BY_NAME)}")


@functools.cache
def project(root=None):
    """(Params, Paths) of the project you stand in, validated once per process."""
    root = root or find_root()
    params = load_params(root / os.environ.get(PARAMS_ENV, "params.yaml"))
    _check_stage_names(params)
    paths = Paths(root, params.name, {stage.name: stage.output for stage in STAGES})
    try:
        paths.inside(params.data.path, "data.path")
    except ValueError as exc:
        raise ParamsError(str(exc)) from None
    return params, paths


def make_task(stage) -> dict:
    """The doit task of a stage: ordering by task_dep, staleness by UpToDate, work in a child."""
    try:
        params, paths = project()
    except ParamsError as exc:
        raise SystemExit(f"error: {exc}") from None
    return {
        "basename": stage.name,
        "doc": stage.doc,
        "actions": [(run_stage, [stage, project])],
        "task_dep": list(stage.upstream_of(params)),
        "targets": [str(paths.dvc_file(stage.name))],
        "uptodate": [UpToDate(stage, project)],
        "verbosity": 2,
    }


def default_tasks() -> list[str]:
    """What a plain `doit` builds: every stage whose own rule says so (register needs azure.*).
    With bad params, every stage: the first one then reports the params error."""
    try:
        params = project()[0]
    except ParamsError:
        return [stage.name for stage in STAGES]
    return [stage.name for stage in STAGES if stage.is_default(params)]


def _creator(stage):
    def create_task():  # doit takes plain functions named task_* as task creators
        return make_task(stage)

    create_task.__doc__ = stage.doc
    return create_task


def doit_task_creators() -> dict:
    """{`task_<stage>`: creator} for dodo.py, in build order."""
    return {f"task_{stage.name}": _creator(stage) for stage in STAGES}
