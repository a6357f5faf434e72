"""Benchmark: a 2 x 2 finetune grid on the tiny build, from a clean checkout, as `doit exp run`
and as `dvc exp run --queue` + `--run-all` over the same seven stages (a dvc.yaml whose commands
run the stages' own code: benchmarks/dvc_stage.py), side by side in one run: wall time, and how
often each stage ran (`make bench-sweep`). Appends to benchmarks/results.jsonl.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.build_times import append_result  # noqa: E402
from tasks.ui import console  # noqa: E402
from tests.conftest import PLAIN, doit, make_project  # noqa: E402

GRID = {"finetune.lora_r": [8, 16], "finetune.learning_rate": [0.0001, 0.0002]}
BIN = Path(sys.executable).parent


def git(project: Path, *args: str) -> None:
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    subprocess.run(["git", *ident, *args], cwd=project, check=True, capture_output=True)


def with_dvc_pipeline(project: Path) -> Path:
    """The project with a dvc.yaml of its default steps: each one's code, data files, upstream
    outputs and params sections as deps, its output folder as out; committed (DVC's experiments
    start from a commit)."""
    from tasks.engine.fingerprint import code_of
    from tasks.pipeline import BY_NAME, plan, read_again

    read_again()
    found, paths = plan(project)
    stages = {}
    for step in found.default():
        stage = BY_NAME[step.split(":")[0]]
        deps = [paths.output(u).relative_to(project).as_posix() for u in found.upstream(step)]
        deps += [*code_of(project, stage.module), "benchmarks/dvc_stage.py"]
        deps += [Path(p).relative_to(project).as_posix() for p in found.external(step).values()]
        stages[step.replace(":", "-")] = {
            "cmd": f"{sys.executable} -m benchmarks.dvc_stage {step}",
            "deps": sorted(set(deps)),
            "params": [k for k in found.sections(step) if k != "lora_targets"],  # derived, not a key
            "outs": [paths.output(step).relative_to(project).as_posix()],
        }
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    (project / "benchmarks").mkdir(exist_ok=True)
    for name in ("__init__.py", "dvc_stage.py"):
        (project / "benchmarks" / name).write_bytes((ROOT / "benchmarks" / name).read_bytes())
    git(project, "add", "-A")
    git(project, "commit", "-qm", "the tiny project as a DVC pipeline")
    return project


def doit_sweep(project: Path) -> tuple[float, Counter]:
    args = [a for key, values in GRID.items() for a in ("-S", f"{key}={','.join(map(str, values))}")]
    start = time.perf_counter()
    run = doit(project, "exp", "run", *args, timeout=3600)
    seconds = time.perf_counter() - start
    if run.returncode:
        raise SystemExit(f"doit exp run failed:\n{run.output}")
    return seconds, Counter(step for step in re.findall(r"^✔ ([\w:-]+) \S+ built", run.output, flags=re.M))


def dvc_sweep(project: Path, counts: Path, jobs: int) -> tuple[float, Counter, int]:
    # DVC's queue worker is started as `dvc` from PATH: this environment's, as a user's shell has it.
    env = {**os.environ, **PLAIN, "BENCH_COUNTS": str(counts), "PATH": f"{BIN}:{os.environ['PATH']}"}
    dvc = [str(BIN / "dvc")]
    start = time.perf_counter()
    for lora_r in GRID["finetune.lora_r"]:
        for lr in GRID["finetune.learning_rate"]:
            queued = [
                *dvc,
                "exp",
                "run",
                "--queue",
                "-S",
                f"finetune.lora_r={lora_r}",
                "-S",
                f"finetune.learning_rate={lr}",
            ]
            subprocess.run(queued, cwd=project, env=env, check=True, capture_output=True)
    ran = subprocess.run(
        [*dvc, "exp", "run", "--run-all", "-j", str(jobs)], cwd=project, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    status = subprocess.run([*dvc, "queue", "status"], cwd=project, env=env, capture_output=True, text=True)
    done = sum(1 for line in status.stdout.splitlines() if " Success" in line)  # as DVC reports them
    if ran.returncode:
        console.print(f"[yellow]dvc exp run --run-all exited {ran.returncode}[/]: {ran.stderr[-2000:]}")
    steps = counts.read_text().split() if counts.exists() else []
    return seconds, Counter(steps), done


def main() -> None:
    jobs = int(os.environ.get("BENCH_DVC_JOBS", "1"))
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        ours = make_project(Path(tmp) / "doit")
        theirs = with_dvc_pipeline(make_project(Path(tmp) / "dvc"))
        # Interleaved would be fairer still, but each side is minutes long: one after the other.
        doit_s, doit_runs = doit_sweep(ours)
        dvc_s, dvc_runs, dvc_done = dvc_sweep(theirs, Path(tmp) / "counts.txt", jobs)
    result = {
        "bench": "sweep 2x2 finetune grid, tiny, clean checkout",
        "doit_exp_run_s": round(doit_s, 1),
        "doit_stage_runs": dict(doit_runs),
        f"dvc_queue_j{jobs}_s": round(dvc_s, 1),
        "dvc_stage_runs": dict(dvc_runs),
        "dvc_experiments_done": dvc_done,
        "dvc_over_doit": round(dvc_s / doit_s, 2),
    }
    append_result(result)


if __name__ == "__main__":
    main()
