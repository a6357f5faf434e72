"""Benchmark: cold build, no-op build, and no-op build over full-size artifacts (`make bench`).

Each figure is wall time of a `doit` process, start to exit, in a fresh copy of the project.
Results are appended to benchmarks/results.jsonl; BENCHMARKS.md quotes them.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tasks.ui import console  # noqa: E402
from tests.conftest import doit, make_project  # noqa: E402

NOOP_RUNS = 7


def timed(project: Path, *args: str) -> tuple[float, list[str]]:
    start = time.perf_counter()
    run = doit(project, *args)
    seconds = time.perf_counter() - start
    if run.returncode:
        raise SystemExit(f"doit {' '.join(args)} failed in {project}:\n{run.output}")
    return seconds, run.ran


def noop_median(project: Path, *args: str) -> float:
    times = []
    for _ in range(NOOP_RUNS):
        seconds, ran = timed(project, *args)
        assert ran == [], f"a no-op run ran {ran}"
        times.append(seconds)
    return statistics.median(times)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and ".dvc/cache" not in str(p))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        tiny = make_project(Path(tmp) / "tiny")
        cold, ran = timed(tiny)
        assert ran == ["data", "base", "quantize", "finetune", "export", "smoke"], ran
        noop_tiny = noop_median(tiny)
        full = make_project(Path(tmp) / "full")
        shutil.copytree(ROOT / "benchmarks", full / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))
        fullsize = ["-f", "benchmarks/dodo_fullsize.py", "-d", "."]
        cold_full, _ = timed(full, *fullsize)
        noop_full = noop_median(full, *fullsize)
        full_bytes = du(full / "models")
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "cold_build_tiny_s": round(cold, 1),
        "noop_tiny_s": round(noop_tiny, 3),
        "noop_fullsize_s": round(noop_full, 3),
        "fullsize_artifacts_gb": round(full_bytes / 1e9, 2),
        "fullsize_first_build_s": round(cold_full, 1),
        "noop_fullsize_over_tiny": round(noop_full / noop_tiny, 2),
    }
    with (ROOT / "benchmarks" / "results.jsonl").open("a") as f:
        f.write(json.dumps(result) + "\n")
    for key, value in result.items():
        console.print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
