"""The command an Azure ML job runs: one stage's `run()`, as tasks/engine/child.py runs it locally.

    python -m tasks.azureml.job_entry <step> --out <output folder> [--input <step>=<folder> ...]

The working directory is the code snapshot (tasks/, params, the job file, the raw data file). The
stage sees the same project layout as at home: a scratch root holding a copy of the snapshot, with
each upstream artifact linked in at its usual path. Its events (progress, tables, the summary or
the error) are JSON lines on stdout, which the job's log carries back to the local side.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
from pathlib import Path


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
    from tasks.engine.protocol import JOB_FILE, Channel, explain, read_job
    from tasks.params import Params
    from tasks.paths import Paths, split_step

    parser = argparse.ArgumentParser(prog="tasks.azureml.job_entry")
    parser.add_argument("stage")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--input", action="append", default=[], help="<stage>=<folder>")
    args = parser.parse_args(argv)
    job = read_job(Path(JOB_FILE))
    adapter = split_step(args.stage)[1]
    params = Params.model_validate(job["params"]).for_adapter(adapter)
    inputs = {name: Path(folder) for name, _, folder in (i.partition("=") for i in args.input)}
    paths_of = lambda root: Paths(root, params.name, job["outputs"], tuple(job["adapters"]), adapter)  # noqa: E731
    paths = paths_of(project_root(Path.cwd(), paths_of, inputs))
    channel = Channel(sys.stdout.fileno(), job)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        summary = importlib.import_module(job["executor"]).run(params, paths, args.out, channel)
    except Exception as exc:  # noqa: BLE001  (reported to the local side, which fails the stage)
        channel.send("error", message=explain(exc, args.out, placed=False)[0])  # the traceback goes to the log
        return 1
    channel.send("summary", **(summary or {}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
