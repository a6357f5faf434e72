"""One step of the build as a plain command, for the dvc.yaml the sweep benchmark compares with:
`python -m benchmarks.dvc_stage finetune:travel` runs the stage's own run() on params.yaml into its
output folder (staged, as the build does) and nothing else: DVC tracks, caches and decides.

Each run appends its step to $BENCH_COUNTS, so the benchmark can count how often DVC ran each stage.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from tasks.engine import artifacts, protocol
from tasks.params_file import load_params
from tasks.paths import Paths, split_step
from tasks.pipeline import BY_NAME, OUTPUTS


def main(step: str) -> None:
    root = Path.cwd()
    stage, adapter = split_step(step)
    params = load_params(root / "params.yaml").for_adapter(adapter)
    paths = Paths(root, params.name, OUTPUTS, tuple(params.adapter_names), adapter)
    paths.models.mkdir(parents=True, exist_ok=True)
    channel = protocol.Channel(os.open(os.devnull, os.O_WRONLY))
    with artifacts.staging(paths.output(step)) as tmp:
        importlib.import_module(BY_NAME[stage].module).run(params, paths, tmp, channel)
    if os.environ.get("BENCH_COUNTS"):
        with open(os.environ["BENCH_COUNTS"], "a") as counts:
            counts.write(step + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
