"""The run lock, for the commands that write (a build, forget, status, clean, exp ...)."""

from __future__ import annotations

from tasks.engine.runlock import BuildRunning, hold
from tasks.paths import find_root
from tasks.ui import console


def locked() -> int | None:
    """Take the run lock for this process; an exit code (3) if another run holds it."""
    try:
        hold(find_root())
    except BuildRunning as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 3
    return None
