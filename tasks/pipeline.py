"""The stages in build order, the project they build, and the doit tasks made from them.

This is the one list of stages: dodo.py, the command line and the tests read it from here. A new
stage is a module under tasks/stages/ (a `STAGE` and a `run()`) and one line below. A stage built
per adapter (its output folder names {adapter}) becomes one doit sub-task per adapter:
`finetune:travel`, `finetune:support`, with `finetune` running them all.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
from pathlib import Path

from doit.exceptions import TaskFailed

from tasks.engine.memo import file_stamp, memo_for, site_stamp
from tasks.engine.plan import Plan, make_plan
from tasks.engine.runner import run_stage
from tasks.engine.uptodate import UpToDate
from tasks.errors import ParamsError
from tasks.paths import Paths, find_root, split_step
from tasks.stages import adapter, base, data, evaluate, export, finetune, quantize, register, smoke

STAGES = tuple(m.STAGE for m in (data, base, quantize, finetune, export, adapter, smoke, evaluate, register))
BY_NAME = {stage.name: stage for stage in STAGES}
OUTPUTS = {stage.name: stage.output for stage in STAGES}
PARAMS_ENV = "LAB_PARAMS"  # another params file (relative to the project), e.g. params/phi35-h100.yaml
HERE = Path(__file__).parent


def _params_file(root: Path) -> Path:
    return root / os.environ.get(PARAMS_ENV, "params.yaml")


def _check_stage_names(params, path) -> None:
    """Params that name stages (jobs.executor) must name real ones."""
    for name in params.jobs.executor:
        if name not in BY_NAME:
            close = difflib.get_close_matches(name, list(BY_NAME), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ParamsError(f"{path}: jobs.executor.{name}: no such stage{hint}; stages: {', '.join(BY_NAME)}")


def _check_gates(params, path) -> None:
    """Every gate must parse and name known figures."""
    from tasks.quality.gates import compile_gates

    try:
        compile_gates(params.gates)
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None


@functools.cache
def _params_bytes(path: Path) -> bytes | None:
    """The params file as this process first read it: the plan, every fingerprint and every stage
    of the run use these bytes, whatever happens to the file meanwhile (None: no such file)."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def params_unchanged(root: Path) -> None:
    """Refuse to build when the params file changed after this run planned its steps (an edit while
    `LAB_WAIT_FOR_LOCK=1` waits, or during a long stage): the step would be built from params its
    fingerprint does not record."""
    path = _params_file(root)
    try:
        now = path.read_bytes()
    except OSError:
        now = None
    if now != _params_bytes(path):
        raise ParamsError(
            f"{path} changed after this run planned its steps; nothing more is built from it: run doit again"
        )


@functools.cache
def project(root: Path | None = None):
    """(Params, Paths) of the project you stand in, read and validated once per process."""
    from tasks.params_file import load_params  # pydantic: only where params are read, not on a no-op

    root = root or find_root()
    path = _params_file(root)
    params = load_params(path, _params_bytes(path))
    _check_stage_names(params, path)
    _check_gates(params, path)
    paths = Paths(root, params.name, OUTPUTS, tuple(params.adapter_names))
    files = [(f"adapters.{name}.data", own.data) for name, own in params.adapters.items()]
    files += [("quantize.calibration", rel) for rel in params.calibration_files()]
    try:
        for key, rel in files:
            paths.inside(rel, key)
    except ValueError as exc:
        raise ParamsError(str(exc)) from None
    return params, paths


def read_again() -> None:
    """Forget what this process read (the params, the plan): as a new process would start."""
    for cached in (_params_bytes, project, plan):
        cached.cache_clear()


def _plan_stamp(path: Path) -> list | None:
    """What the plan is computed from: the params file's bytes, the code that reads them, and the
    installed packages (a GGUF file inside a wheel is found through its metadata)."""
    text = _params_bytes(path)
    if text is None:
        return None
    code = [HERE / "params.py", HERE / "params_file.py", HERE / "pipeline.py"]
    code += sorted((HERE / "stages").glob("*.py"))
    code += sorted((HERE / "engine").glob("*.py"))
    files = [[p.name, *file_stamp(p)] for p in code]
    return [hashlib.sha256(text).hexdigest(), files, site_stamp()]


@functools.cache
def plan(root: Path | None = None) -> tuple[Plan, Paths]:
    """(Plan, Paths) of the project you stand in: what the params make of the stages, memoized."""
    root = root or find_root()
    path = _params_file(root)
    stamp = _plan_stamp(path)  # None: no params file, which project() below names
    made = lambda: make_plan(STAGES, *project(root)).to_json()  # noqa: E731
    found = Plan(**(memo_for(root).get("plan", str(path), stamp, made) if stamp else made()))
    return found, Paths(root, found.name, OUTPUTS, tuple(found.adapters))


def _checked_project():
    """project(), for a stage about to run: refused if the params file changed since the plan."""
    params, paths = project()
    params_unchanged(paths.root)
    return params, paths


def _step_task(stage, step: str, found: Plan, paths: Paths) -> dict:
    """The doit task of one step: ordering by task_dep, staleness by UpToDate, work in a child."""
    doc = stage.doc if step in found.default() else f"{stage.doc}; not in a plain `doit`"
    unable = found.unable(step)
    if unable:  # fail at once, before building any upstream stage it would need
        return {"doc": doc, "actions": [lambda: TaskFailed(unable)], "verbosity": 2}
    return {
        "doc": doc,
        "actions": [(run_stage, [stage, step, plan, _checked_project])],
        "task_dep": found.upstream(step),
        "targets": [str(paths.dvc_file(step))],
        "uptodate": [UpToDate(stage, step, plan)],
        "verbosity": 2,
    }


def make_tasks(stage):
    """The doit task of a stage, or for a stage of each adapter a sub-task per adapter
    (`finetune:travel`) under a group task (`finetune`) that runs them all."""
    try:
        found, paths = plan()
    except ParamsError as exc:
        raise SystemExit(f"error: {exc}") from None
    if not stage.per_adapter:
        yield {"basename": stage.name, **_step_task(stage, stage.name, found, paths)}
        return
    yield {"basename": stage.name, "name": None, "doc": f"{stage.doc} (every adapter)"}
    for step in paths.steps_of(stage.name):
        yield {"basename": stage.name, "name": split_step(step)[1], **_step_task(stage, step, found, paths)}


def _gates_failed(found: Plan, paths: Paths):
    from tasks.quality.gates import check

    why = check(found.gates, paths)
    return TaskFailed(why) if why else None


def _gates_task():
    """`doit gates`: params' quality gates on the figures evaluate published (checked again whenever
    those or the gates change; a failure fails every run until fixed)."""
    from doit.tools import config_changed

    try:
        found, paths = plan()
    except ParamsError as exc:
        raise SystemExit(f"error: {exc}") from None
    steps = [step for step in found.stages if split_step(step)[0] == "evaluate"]
    yield {
        "basename": "gates",
        "doc": "Check params' quality gates on evaluate's figures (a plain `doit` ends with it)",
        "actions": [(_gates_failed, [found, paths])],
        "task_dep": steps,
        "file_dep": [str(paths.metrics(s)) for s in steps],
        "uptodate": [config_changed(found.gates)],
        "verbosity": 2,
    }


def default_tasks() -> list[str]:
    """What a plain `doit` builds: every stage whose own rule says so (register needs azure.*).
    With bad params, every stage: the first one then reports the params error."""
    try:
        return plan()[0].default()
    except ParamsError:
        return [stage.name for stage in STAGES]


def _creator(stage):
    def create_task():  # doit takes plain functions named task_* as task creators
        yield from make_tasks(stage)

    create_task.__doc__ = stage.doc
    return create_task


def doit_task_creators() -> dict:
    """{`task_<stage>`: creator} for dodo.py, in build order."""
    creators = {f"task_{stage.name}": _creator(stage) for stage in STAGES}
    try:
        gates = plan()[0].gates
    except ParamsError:
        gates = {}  # the first stage reports the params error
    return creators | ({"task_gates": _gates_task} if gates else {})
