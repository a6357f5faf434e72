"""A stage process started before it is needed. Importing torch and transformers takes a stage
process 3-5 s (most of a small model's stage); a spare does that while the stage before it runs,
then waits for the step it will build. The runner hands the next step to the spare instead of
starting a cold process.

A spare is an ordinary child of the build, started the way a cold stage process is (same
command, environment, folder and death signal), only early; nothing is forked. It is used only
by a step whose environment and folder are exactly its own, and killed when the build ends.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from tasks.engine import protocol

OFF_ENV = "LAB_SPARE"  # LAB_SPARE=0 doit: every step in a process started when it is needed
# What every stage that touches a model imports: a spare imports it while it waits. (Importing
# these initializes no GPU: a step planned for the CPU can still hide it, in child.py.)
WARM = ("torch", "transformers", "transformers.modeling_utils")
SPARE_FLAG = "--spare"

_lock = threading.Lock()
_ready: tuple[dict, Path, subprocess.Popen] | None = None
# The steps of this run that doit has not reached yet (the reporter keeps it: tasks/cli/reporter.py);
# None: unknown, as when the runner is driven without doit. No spare is started for the last one.
_unreached: set[str] | None = None


def expect(steps) -> None:
    """The steps this run may build, before it starts."""
    global _unreached
    _unreached = set(steps)


def reached(step: str) -> None:
    """doit has come to `step` (to check it, restore it or build it)."""
    if _unreached is not None:
        _unreached.discard(step)


def needed_after(step: str) -> bool:
    """Whether a step after `step` may still run in this build (it may then find itself up to date)."""
    return _unreached is None or bool(_unreached - {step})


def command() -> list[str]:
    """The stage process: `python -m tasks.engine.child`, given its step now or (a spare) later."""
    return [sys.executable, "-m", "tasks.engine.child"]


def start(env: dict, cwd: Path) -> None:
    """Have one spare ready for steps run with `env` in `cwd` (a previous one is discarded)."""
    global _ready
    if os.environ.get(OFF_ENV) == "0":
        return
    proc = subprocess.Popen(
        [*command(), SPARE_FLAG],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # its imports' warnings; the step's log is its stderr once handed over
        cwd=cwd,
        env=env,
        text=True,
        preexec_fn=protocol.die_with_parent,
    )
    with _lock:
        previous, _ready = _ready, (dict(env), Path(cwd), proc)
    if previous:
        _stop(previous[2])


def take(step: str, job: Path, log: Path, env: dict, cwd: Path) -> subprocess.Popen | None:
    """The spare, now building `step` (its stderr going to `log`), if it was started for this
    environment and folder and is still waiting; else None (start a cold process)."""
    global _ready
    with _lock:
        ready, _ready = _ready, None
    if ready is None:
        return None
    spare_env, spare_cwd, proc = ready
    if spare_env != env or spare_cwd != Path(cwd) or proc.poll() is not None:
        _stop(proc)
        return None
    try:
        proc.stdin.write(json.dumps({"step": step, "job": str(job), "log": str(log)}) + "\n")
        proc.stdin.close()
    except OSError:  # it died between the check and the order
        _stop(proc)
        return None
    return proc


def discard() -> None:
    """Kill a spare nobody will use (the build is over)."""
    global _ready
    with _lock:
        ready, _ready = _ready, None
    if ready:
        _stop(ready[2])


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream and not stream.closed:
            stream.close()


atexit.register(discard)
