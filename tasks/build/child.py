"""The child process that runs one stage: `python -m tasks.child <stage> <job.json>`.

File descriptor 1 becomes the event channel to the parent (JSON lines); everything else a library
prints, C code included, goes to the stage's log file, which the parent opened as our stderr.
"""

from __future__ import annotations

import errno
import importlib
import json
import logging
import os
import shutil
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path


def die_with_parent() -> None:
    """For preexec_fn: SIGKILL this process when the one that started it dies, even by SIGKILL,
    so a killed `doit` leaves no stage writing behind it."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class Channel:
    """Events for the parent: progress of long loops, text to show, the outcome."""

    def __init__(self, fd: int):
        self._out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")

    def send(self, event: str, **fields) -> None:
        self._out.write(json.dumps({"event": event, **fields}) + "\n")

    def progress(self, bar: str, done: int, total: int | None) -> None:
        self.send("progress", bar=bar, done=done, total=total)

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        self.send("table", title=title, columns=columns, rows=rows)


def _take_over_stdout() -> Channel:
    channel = Channel(os.dup(1))
    os.dup2(2, 1)  # library prints go to the log, not into the event stream
    sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", errors="replace")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    return channel


DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _explain(exc: Exception, stage: str, out: Path, placed: bool) -> tuple[str, int]:
    """The message the user sees, and the exit code; tracebacks go to the log only."""
    from tasks.errors import StageError

    if isinstance(exc, StageError):
        return str(exc), 2
    traceback.print_exc()
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        where = exc.filename or out
        kept = f"{out} was replaced but not recorded; it will rebuild" if placed else f"the previous {out} is untouched"
        return f"disk full while writing {where} ({exc.strerror}); {kept}", 2
    return f"{type(exc).__name__}: {exc}", 1


PROFILE_ENV = "LAB_PROFILE"  # LAB_PROFILE=1 doit -s -a quantize: cProfile stats to logs/quantize.prof


def _profiled(run, log: Path):
    """`run`, under cProfile when LAB_PROFILE is set (where a GPU stage spends its minutes); the
    stats go beside the stage log, the top entries into it."""
    if not os.environ.get(PROFILE_ENV):
        return run

    def wrapper(*args):
        import cProfile
        import pstats

        with cProfile.Profile() as profile:
            result = run(*args)
        profile.dump_stats(log.with_suffix(".prof"))
        stats = pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative")
        stats.print_stats(60)
        stats.sort_stats("tottime").print_stats(40)
        return result

    return wrapper


def build_record(stage: str, out: Path, seconds: float, summary: dict, fingerprint: dict) -> dict:
    """The `meta:` of a stage's .dvc file: when, what it measured (its metrics), what from."""
    from tasks.artifacts import file_stats

    sizes = [size for size, _ in file_stats(out).values()]
    numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    words = {k: v for k, v in summary.items() if isinstance(v, str)}  # e.g. the model version a label resolved to
    return {
        "stage": stage,
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metrics": {"seconds": round(seconds, 2), "bytes": sum(sizes), "files": len(sizes), **numbers},
        **({"details": words} if words else {}),
        "fingerprint": fingerprint,
    }


def main(stage_name: str, job_file: str) -> int:
    channel = _take_over_stdout()
    from tasks import artifacts
    from tasks.params import Params
    from tasks.paths import Paths

    job = json.loads(Path(job_file).read_text())
    logging.getLogger("tasks").info("stage %s: started (pid %d)", stage_name, os.getpid())
    params = Params.model_validate(job["params"])
    paths = Paths(Path(job["root"]), params.name)
    module = importlib.import_module(job["module"])
    out = paths.output(stage_name)
    os.environ["LAB_STAGE"] = stage_name
    for scratch in paths.models.glob(f".{stage_name}-*"):  # a killed run's temporary folders
        shutil.rmtree(scratch, ignore_errors=True)
    placed = False
    try:
        artifacts.failpoint("start")
        started = time.perf_counter()
        with artifacts.staging(out) as tmp:
            if params.jobs.remote(stage_name):  # the same run(), on Azure ML compute (tasks/azureml_job.py)
                from tasks.azureml_job import run_as_job

                summary = run_as_job(stage_name, params, paths, tmp, channel, job)
            else:
                summary = _profiled(module.run, paths.log(stage_name))(params, paths, tmp, channel) or {}
        placed = True
        meta = build_record(stage_name, out, time.perf_counter() - started, summary, job["fingerprint"])
        artifacts.dvc_track(paths.root, out, meta)
        artifacts.publish_records(paths, stage_name, meta["metrics"])
        artifacts.failpoint("tracked")
    except Exception as exc:
        message, code = _explain(exc, stage_name, out, placed)
        channel.send("error", message=message)
        return code
    logging.getLogger("tasks").info("stage %s: done", stage_name)
    channel.send("summary", **summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
