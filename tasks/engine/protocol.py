"""How the build talks to a stage process, local or remote: the job it is given, the events it sends
back (JSON lines on a channel), and how its failure becomes the message the user reads.

Shared by the parent (runner.py), the local stage process (child.py) and an Azure ML job's entry
point (tasks/azureml/job_entry.py), so the three speak one protocol.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import sys
import traceback
from pathlib import Path

# Offline by default: nothing may reach a model hub unless a stage asks for it (Stage.online).
CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DVC_NO_ANALYTICS": "1",
    "PYTHONUNBUFFERED": "1",
}
JOB_FILE = "lab_job.json"  # the job's name inside a remote job's code snapshot
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def child_env(online: bool) -> dict:
    """The environment of a stage process."""
    env = {**os.environ, **CHILD_ENV}
    if online:
        env.pop("HF_HUB_OFFLINE")
    return env


def write_job(path: Path, job: dict) -> Path:
    """The job file: root, stage, the module to run, upstream stages, output folders, params, fingerprint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keys in their own order, never sorted: the order of params' adapters means something (the first
    # is the default one and AWQ's calibration set).
    path.write_text(json.dumps(job, indent=1))
    return path


def read_job(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def stop_as_ctrl_c(signum, frame):
    """Signal handler: SIGTERM (a service manager, `timeout`, `kill`) stops like Ctrl-C, so the
    same cleanup runs: partial output removed, a remote job cancelled."""
    raise KeyboardInterrupt


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_once(signum, frame):
    """Signal handler for a process that cleans up when stopped (a stage removing its staging
    folder, a job follower cancelling the job): the first Ctrl-C or SIGTERM stops it, later ones
    are ignored from that instant. A terminal's Ctrl-C reaches the whole process group and the
    parent forwards it again; a second KeyboardInterrupt would cut the cleanup short."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def stop_once_on_signals() -> dict:
    """Install `stop_once` for SIGINT and SIGTERM; return the handlers it replaced."""
    return {sig: signal.signal(sig, stop_once) for sig in STOP_SIGNALS}


def die_with_parent() -> None:
    """For preexec_fn: SIGKILL this process when the one that started it dies, even by SIGKILL,
    so a killed `doit` leaves no stage writing behind it."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class Channel:
    """A stage's events for the parent: progress of long loops, tables to show, the outcome; and
    the job it was given (`job`)."""

    def __init__(self, fd: int, job: dict | None = None):
        self._out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
        self.job = job or {}

    def send(self, event: str, **fields) -> None:
        self._out.write(json.dumps({"event": event, **fields}) + "\n")

    def progress(self, bar: str, done: int, total: int | None) -> None:
        self.send("progress", bar=bar, done=done, total=total)

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        self.send("table", title=title, columns=columns, rows=rows)


def event(line: str) -> tuple[str | None, dict]:
    """(kind, fields) of one line a stage wrote; (None, {}) for anything that is not an event."""
    try:
        fields = json.loads(line)
    except json.JSONDecodeError:
        return None, {}
    if not isinstance(fields, dict):
        return None, {}
    return fields.pop("event", None), fields


def explain(exc: Exception, out: Path, placed: bool) -> tuple[str, int]:
    """The message the user sees, and the exit code; tracebacks go to the log only."""
    from tasks.errors import StageError, redact

    if isinstance(exc, StageError):
        return str(exc), 2
    sys.stderr.write(redact(traceback.format_exc()))
    code = _disk_full(exc)
    if code:
        where = getattr(exc, "filename", None) or out
        kept = f"{out} was replaced but not recorded; it will rebuild" if placed else f"the previous {out} is untouched"
        return f"disk full while writing {where} ({os.strerror(code)}); {kept}", 2
    return f"{type(exc).__name__}: {exc}", 1


def _disk_full(exc: BaseException | None) -> int | None:
    """The errno of a full disk (or file size limit, or quota), from an OSError, from the text of a
    library's own error (safetensors, written in Rust, says `... (os error 28)`), or from the error
    that caused a library's own (datasets raises DatasetGenerationError from the OSError)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc.errno
        found = re.search(r"\(os error (\d+)\)", str(exc))
        if found and int(found[1]) in DISK_FULL:
            return int(found[1])
        exc = exc.__cause__ or exc.__context__
    return None
