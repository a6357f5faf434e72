"""The command an Azure ML job runs: one stage's `run()`, as tasks/child.py runs it locally.

    python -m tasks.job_entry <stage> --out <output folder> [--input <stage>=<folder> ...]

The working directory is the code snapshot (tasks/, params, the job file, the raw data file). The
stage sees the same project layout as at home: a scratch root holding a copy of the snapshot, with
each upstream artifact linked in at its usual path. Its events (progress, tables, the summary or
the error) are JSON lines on stdout, which the job's log carries back to the local side.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

JOB_FILE = "lab_job.json"


def project_root(snapshot: Path, paths_of, inputs: dict[str, Path]) -> Path:
    root = Path(tempfile.mkdtemp(prefix="lab-job-"))
    shutil.copytree(snapshot, root, dirs_exist_ok=True)
    paths = paths_of(root)
    for stage, folder in inputs.items():
        target = paths.output(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(folder.resolve(), target_is_directory=True)
    return root


def main(argv: list[str]) -> int:
    from tasks.child import Channel
    from tasks.errors import StageError
    from tasks.params import Params
    from tasks.paths import Paths

    parser = argparse.ArgumentParser(prog="tasks.job_entry")
    parser.add_argument("stage")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--input", action="append", default=[], help="<stage>=<folder>")
    args = parser.parse_args(argv)
    job = json.loads(Path(JOB_FILE).read_text())
    params = Params.model_validate(job["params"])
    inputs = {name: Path(folder) for name, _, folder in (i.partition("=") for i in args.input)}
    root = project_root(Path.cwd(), lambda r: Paths(r, params.name), inputs)
    channel = Channel(sys.stdout.fileno())
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        summary = importlib.import_module(job["module"]).run(params, Paths(root, params.name), args.out, channel)
    except Exception as exc:  # noqa: BLE001  (reported to the local side, which fails the stage)
        traceback.print_exc()
        channel.send("error", message=str(exc) if isinstance(exc, StageError) else f"{type(exc).__name__}: {exc}")
        return 1
    channel.send("summary", **(summary or {}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
