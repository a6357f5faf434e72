"""Parent side of a stage: restore it from DVC's cache, or start its process (which runs the stage
here or as an Azure ML job), draw its progress, and turn its outcome into doit's."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

from doit.exceptions import TaskFailed

from tasks import ui
from tasks.engine import artifacts, protocol, spare, store
from tasks.engine.fingerprint import fingerprint
from tasks.engine.uptodate import UpToDate, save_values
from tasks.errors import ParamsError, StageError

REMOTE_EXECUTOR = "tasks.azureml.job"  # runs a stage's run() on Azure ML compute (params jobs.executor)
# `doit -a` (always): every step this run executes is recomputed, never restored from DVC's cache.
# Set by the run command (tasks/cli/builtins.py) for its process.
forced = False


def _write_job(stage, step: str, plan, params, paths, fp: dict, publish: bool = True):
    return protocol.write_job(
        paths.log(step).with_suffix(".job.json"),
        {
            "root": str(paths.root),
            "stage": step,
            "module": stage.module,
            "executor": REMOTE_EXECUTOR if params.jobs.remote(stage.name) else stage.module,
            "upstream": plan.upstream(step),
            "outputs": paths.outputs,
            "folders": paths.folders,  # steps an experiment's trial places outside the workspace
            "log_folder": paths.log_folder,
            "publish": publish,  # the workspace's git-tracked metrics: not for a trial's build
            "adapters": list(paths.adapters),
            "tracked_copies": [list(pair) for pair in stage.tracked_copies],
            "fingerprint": fp,
            "devices": plan.devices(step),  # the choices the fingerprint's devices were resolved from
            "params": params.model_dump(mode="json"),
        },
    )


def _follow(proc: subprocess.Popen, stage: str, show: str) -> dict:
    """Render the child's events until it exits (show: all, bars, or none when steps of several
    trials run at once); return the last summary or error."""
    outcome: dict = {}
    with ui.StageProgress(stage, quiet=show == "none") as bars:
        for line in proc.stdout:
            kind, event = protocol.event(line)
            if kind == "progress":
                bars.update(event["bar"], event["done"], event.get("total"))
            elif kind == "table" and show == "all":
                bars.table(event["title"], event["columns"], event["rows"])
            elif kind in ("summary", "error"):
                outcome = {"kind": kind, **event}
    return outcome


def _start_child(step: str, job, paths, env: dict, show: str) -> subprocess.Popen:
    """The step's process: the spare if one waits for this environment, else a cold one. Steps run
    one at a time (show != none) get a spare started beside them if a step may follow; only from the
    main thread, as a process's death signal follows the thread that started it, not the process."""
    log = paths.log(step)
    log.write_text("")  # the step's log starts empty, whichever process writes it
    one_at_a_time = show != "none" and threading.current_thread() is threading.main_thread()
    proc = spare.take(step, job, log, env, paths.root) if one_at_a_time else None
    if proc is None:
        with log.open("w") as log_file:
            proc = subprocess.Popen(
                [*spare.command(), step, str(job)],
                stdout=subprocess.PIPE,
                stderr=log_file,
                cwd=paths.root,
                env=env,
                text=True,
                preexec_fn=protocol.die_with_parent,
            )
    if one_at_a_time and spare.needed_after(step):
        spare.start(env, paths.root)
    return proc


def _run_child(step: str, job, paths, env: dict, show: str = "all") -> tuple[int, dict, bool]:
    """Run the child to its end; on Ctrl-C let it clean up first. Returns (rc, outcome, interrupted)."""
    proc = _start_child(step, job, paths, env, show)
    with proc:
        try:
            outcome = _follow(proc, step, show)
            return proc.wait(), outcome, False
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)  # a no-op if the terminal already sent it to the group
            proc.wait()
            return proc.returncode, {}, True


def _values(paths, stage: str, seconds: float, summary: dict, **extra) -> dict:
    """What doit stores for a finished stage: its files' stats (the cheap integrity check), the
    content hash it was checked against, and what the reporter shows."""
    files = artifacts.file_stats(paths.output(stage))
    return {
        "files": files,
        "md5": store.content_hash(paths.dvc_file(stage)),
        "size": sum(size for size, _ in files.values()),
        "seconds": round(seconds, 2),
        "summary": summary,
        **extra,
    }


def _restore(stage, step: str, task, paths, fp: dict) -> dict | None:
    """A stale stage whose exact fingerprint was built before comes back from DVC's cache."""
    check = next(u for u, *_ in task.uptodate if isinstance(u, UpToDate))
    if forced or check.reason is None:
        return None  # forced (`doit -a`): a user who distrusts a build gets it recomputed
    # A restore killed half-way needs no cleanup: doit's record (content hash and file stats) then
    # disagrees with the .dvc file or the folder, so the next run restores again.
    started = time.perf_counter()
    try:
        doc, refused = store.restore(paths.root, paths.dvc_file(step), fp)
    except Exception as exc:  # noqa: BLE001  (a broken cache or a full disk: building is still right)
        doc, refused = None, [f"the DVC cache could not be read ({type(exc).__name__}: {exc})"]
    if doc is not None and stage.verify:
        try:
            stage.verify(paths.output(step))
        except StageError as exc:  # rebuilt below; the build's staging replaces the refused copy
            doc, refused = None, [*refused, str(exc)]
    for why in refused:
        ui.console.print(f"   [yellow]cached build of {step} not used[/]: {why}")
    if doc is None:
        return None
    metrics = doc["meta"].get("metrics", {})
    store.publish_records(paths, step, doc["meta"], stage.tracked_copies)
    how = "checked out" if doc["changed"] else "verified in place"
    values = _values(paths, step, time.perf_counter() - started, metrics, restored=how)
    save_values(paths.root, task.name, values)
    return values


def build(stage, step: str, plan, params, paths, fp: dict, *, publish=True, gpu=None, show="all") -> dict:
    """Build the step in a stage process; {"summary": ..., "seconds": ...} or {"error": why}.
    `gpu`: the one GPU it may see; `show`: all, bars or none (several steps of an experiment at
    once: none; signals then stay with the thread that runs them all)."""
    job = _write_job(stage, step, plan, params, paths, fp, publish)
    log = paths.log(step)
    env = protocol.child_env(online=bool(stage.online and stage.online(params)))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    started = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, protocol.stop_as_ctrl_c) if show != "none" else None
    try:
        rc, outcome, interrupted = _run_child(step, job, paths, env, show)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if interrupted:
        why = f"interrupted (Ctrl-C or SIGTERM): {step} stopped, its partial output removed\n  log: {log}"
        return {"error": why, "interrupted": True}
    if rc != 0 or outcome.get("kind") != "summary":
        reason = outcome.get("message") or f"the stage process exited with code {rc}"
        return {"error": f"{reason}\n  log: {log}"}
    summary = {k: v for k, v in outcome.items() if k != "kind"}
    return {"summary": summary, "seconds": time.perf_counter() - started}


def run_stage(stage, step: str, plan, project, task):
    """doit action: restore the step from DVC's cache if it was built from the same inputs before,
    else build it in a child process; return values doit stores for the task. `plan` and `project`
    give the build's (Plan, Paths) and its validated (Params, Paths)."""
    try:
        params, paths = project()  # the params this run planned with; refused if the file changed since
    except ParamsError as exc:
        return TaskFailed(str(exc))
    fp = fingerprint(stage, step, *plan())
    restored = _restore(stage, step, task, plan()[1], fp)
    if restored:
        return restored
    built = build(stage, step, plan()[0], params, paths, fp)
    if "error" in built:
        return TaskFailed(built["error"])
    values = _values(paths, step, built["seconds"], built["summary"])
    save_values(paths.root, task.name, values)
    return values
