"""A sweep's record, `models/experiments/<sweep>.json` (git-tracked, small): its grid, and per trial
its overrides, status, each step's unit (fingerprint key, content hash, how it came, seconds),
its figures and its wall time. Rewritten in one rename after every step, so a sweep killed at any
point leaves the record as it was after the last finished step, never half a file.
"""

from __future__ import annotations

import difflib
import threading
from datetime import datetime, timezone

from tasks.engine import artifacts
from tasks.errors import ParamsError
from tasks.experiments.units import EXPERIMENTS

_writing = threading.Lock()  # steps of several trials finish at once


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def path(root, sweep: str):
    return root / EXPERIMENTS / f"{sweep}.json"


def save(root, sweep: str, doc: dict) -> None:
    with _writing:
        artifacts.write_json(path(root, sweep), {**doc, "updated": now()})


def load(root, sweep: str) -> dict | None:
    return artifacts.read_json(path(root, sweep))


def names(root) -> list[str]:
    folder = root / EXPERIMENTS
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def find(root, sweep: str | None) -> tuple[str, dict]:
    """(name, record) of a sweep; none named: the one updated last. Unknown: says which exist."""
    known = names(root)
    if not known:
        raise ParamsError("no sweep recorded yet: run one with `doit exp run -S key=a,b`")
    if sweep is None:
        sweep = max(known, key=lambda n: (load(root, n) or {}).get("updated", ""))
    doc = load(root, sweep) if sweep in known else None  # a name, never a path
    if doc is None:
        close = difflib.get_close_matches(sweep, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ParamsError(f"no sweep named {sweep!r}{hint}; sweeps: {', '.join(known)}")
    return sweep, doc


def find_trial(root, trial: str, sweep: str | None = None) -> tuple[str, dict, dict]:
    """(sweep, record, trial) of a trial named in any sweep (or the one named)."""
    sweeps = [sweep] if sweep else names(root)
    found = [(s, d) for s in sweeps if (d := load(root, s)) and trial in d.get("trials", {})]
    if not found:
        known = sorted({t for s in sweeps for t in (load(root, s) or {}).get("trials", {})})
        close = difflib.get_close_matches(trial, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ParamsError(f"no trial named {trial!r}{hint}; trials: {', '.join(known) or 'none'}")
    if len(found) > 1:
        raise ParamsError(f"trial {trial!r} is in sweeps {', '.join(s for s, _ in found)}: name one with --sweep")
    name, doc = found[0]
    return name, doc, doc["trials"][trial]
