"""One build at a time per checkout: an advisory lock that names the run holding it.

doit has no run lock: two `doit` runs in one checkout execute the same stage at once. The lock is
an flock on `.doit.lock`, so the kernel releases it when its process dies, SIGKILL included.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from datetime import datetime
from pathlib import Path

WAIT_ENV = "LAB_WAIT_FOR_LOCK"  # set to 1 to wait for the running build instead of refusing


class BuildRunning(RuntimeError):
    """Another doit run holds the lock; the message names its PID and start time."""


class RunLock:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text())
            since = datetime.fromtimestamp(info["started"]).strftime("%Y-%m-%d %H:%M:%S")
            return f"pid {info['pid']}, running since {since}"
        except (OSError, ValueError, KeyError):
            return "pid unknown"

    def acquire(self, wait: bool | None = None) -> None:
        """Take the lock, or raise BuildRunning (or block, with wait or LAB_WAIT_FOR_LOCK=1)."""
        wait = os.environ.get(WAIT_ENV) == "1" if wait is None else wait
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                os.close(fd)
                raise BuildRunning(
                    f"another doit run is building in this checkout ({self._holder()}); "
                    f"wait for it, or set {WAIT_ENV}=1 to queue behind it"
                ) from None
            from tasks.ui import console

            console.print(f"[dim]waiting for the doit run building in this checkout ({self._holder()})...[/]")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "started": time.time()}).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


_held: dict[Path, RunLock] = {}  # the locks this process holds, until it exits


def hold(root: Path) -> bool:
    """Hold the checkout's run lock for the rest of this process (every command that writes takes
    it: a build under any reporter, forget, push, pull); True if it was taken just now."""
    if root in _held:
        return False
    lock = RunLock(root / ".doit.lock")
    lock.acquire()
    _held[root] = lock
    return True
