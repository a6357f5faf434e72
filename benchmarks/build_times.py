"""Benchmark: cold build, no-op build, no-op build over full-size artifacts, and restoring a stage
from DVC's cache versus recomputing it (`make bench`).

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
from tasks.pipeline import default_tasks  # noqa: E402
from tasks.ui import console  # noqa: E402
from tests.conftest import doit, edit_params, make_project  # noqa: E402

NOOP_RUNS = 7


def timed(project: Path, *args: str) -> tuple[float, list[str]]:
    seconds, run = timed_run(project, *args)
    return seconds, run.ran


def timed_run(project: Path, *args: str):
    start = time.perf_counter()
    run = doit(project, *args)
    seconds = time.perf_counter() - start
    if run.returncode:
        raise SystemExit(f"doit {' '.join(args)} failed in {project}:\n{run.output}")
    return seconds, run


def recompute_then_restore(project: Path, old: str, new: str, *args: str) -> tuple[float, float, list[str]]:
    """Change a param (the stages after it recompute), change it back (they come from the cache)."""
    edit_params(project, old, new)
    recompute, run = timed_run(project, *args)
    assert run.ran and not run.restored, run.output
    edit_params(project, new, old)
    restore, run = timed_run(project, *args)
    assert run.restored and not run.ran, run.output
    return recompute, restore, run.restored


def cold_without_spares(dest: Path) -> float:
    """The cold tiny build again, right after the first, with every stage process started when its
    step starts (no spare importing torch ahead: tasks/engine/spare.py)."""
    project = make_project(dest)
    start = time.perf_counter()
    run = doit(project, env={"LAB_SPARE": "0"})
    assert run.returncode == 0 and run.ran == default_tasks(), run.output
    return time.perf_counter() - start


def noop_median(project: Path, *args: str) -> float:
    times = []
    for _ in range(NOOP_RUNS):
        seconds, ran = timed(project, *args)
        assert ran == [], f"a no-op run ran {ran}"
        times.append(seconds)
    return statistics.median(times)


def dvc_equivalent(project: Path, scratch: Path) -> Path:
    """A copy of a built project whose steps are a dvc.yaml instead (same deps: upstream outputs,
    the stage's code files, the data files, its params sections), reproduced once."""
    import yaml

    from tasks.engine.fingerprint import code_of
    from tasks.pipeline import STAGES, plan

    found, paths = plan(project)
    copy = shutil.copytree(project, scratch, symlinks=True)
    for dvc_file in [*(copy / "models").rglob("*.dvc"), *(copy / "data/prepared").rglob("*.dvc")]:
        dvc_file.unlink()
    by_name = {s.name: s for s in STAGES}
    stages = {}
    for step in found.default():
        stage = by_name[step.split(":")[0]]
        out = paths.output(step).relative_to(project).as_posix()
        deps = [paths.output(u).relative_to(project).as_posix() for u in found.upstream(step)]
        deps += [
            *code_of(project, stage.module),
            *(Path(p).relative_to(project).as_posix() for p in found.external(step).values()),
        ]
        # DVC deletes an output before its command runs: the command copies the built one back.
        stages[step.replace(":", "-")] = {
            "cmd": f"cp -a {project / out} {out}",
            "deps": deps,
            "params": [k for k in found.sections(step) if k != "lora_targets"],  # derived, not a params key
            "outs": [out],
        }
    (copy / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro", "-q"], cwd=copy, check=True)
    return copy


def noop_doit_vs_dvc(project: Path, dvc_copy: Path) -> tuple[float, float]:
    """Medians of no-op `doit` and no-op `dvc repro` (the console scripts a user types), interleaved
    so that both see the same machine."""
    bin_dir = Path(sys.executable).parent
    runs = {"doit": (project, [], "nothing to do"), "dvc": (dvc_copy, ["repro"], "are up to date")}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(NOOP_RUNS):
        for name, (cwd, args, no_op) in runs.items():
            start = time.perf_counter()
            run = subprocess.run([str(bin_dir / name), *args], cwd=cwd, capture_output=True, text=True)
            times[name].append(time.perf_counter() - start)
            assert run.returncode == 0 and no_op in run.stdout, run.stdout + run.stderr
    return statistics.median(times["doit"]), statistics.median(times["dvc"])


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and ".dvc/cache" not in str(p))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        tiny = make_project(Path(tmp) / "tiny")
        cold, ran = timed(tiny)
        assert ran == default_tasks(), ran
        cold_no_spare = cold_without_spares(Path(tmp) / "tiny-no-spare")
        noop_tiny = noop_median(tiny)
        noop_doit, noop_dvc = noop_doit_vs_dvc(tiny, dvc_equivalent(tiny, Path(tmp) / "tiny-dvc"))
        lr = ("learning_rate: 0.0002", "learning_rate: 0.001")
        recompute_tiny, restore_tiny, restored_tiny = recompute_then_restore(tiny, *lr)
        full = make_project(Path(tmp) / "full")
        shutil.copytree(ROOT / "benchmarks", full / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))
        fullsize = ["-f", "benchmarks/dodo_fullsize.py", "-d", "."]
        cold_full, _ = timed(full, *fullsize)
        noop_full = noop_median(full, *fullsize)
        full_bytes = du(full / "models")
        seed = ("seed: 1234", "seed: 99")  # base's seed: every model stage, 9.9 GB of outputs
        recompute_full, restore_full, restored_full = recompute_then_restore(full, *seed, *fullsize)
    result = {
        "cold_build_tiny_s": round(cold, 1),
        "cold_build_tiny_no_spare_s": round(cold_no_spare, 1),  # LAB_SPARE=0: each stage process started cold
        "noop_tiny_s": round(noop_tiny, 3),
        "noop_doit_console_s": round(noop_doit, 3),  # the same, as `doit` (console script), beside:
        "noop_dvc_repro_s": round(noop_dvc, 3),  # the same seven stages as a dvc.yaml, `dvc repro`
        "dvc_repro_over_doit": round(noop_dvc / noop_doit, 2),
        "noop_fullsize_s": round(noop_full, 3),
        "fullsize_artifacts_gb": round(full_bytes / 1e9, 2),
        "fullsize_first_build_s": round(cold_full, 1),
        "noop_fullsize_over_tiny": round(noop_full / noop_tiny, 2),
        "restored_tiny": restored_tiny,
        "recompute_tiny_s": round(recompute_tiny, 2),
        "restore_tiny_s": round(restore_tiny, 2),
        "restored_fullsize": restored_full,
        "rewrite_fullsize_s": round(recompute_full, 2),  # stand-in stages: writing the bytes, no compute
        "restore_fullsize_s": round(restore_full, 2),
    }
    append_result(result)


def append_result(result: dict) -> None:
    """Add a run's figures, with when, where and at which commit, to benchmarks/results.jsonl
    (BENCHMARKS.md quotes them) and print them."""
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    result = {"date": when, "machine": machine, "git": git.stdout.strip(), **result}
    with (ROOT / "benchmarks" / "results.jsonl").open("a") as f:
        f.write(json.dumps(result) + "\n")
    for key, value in result.items():
        console.print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
