"""Device choice inside a stage's child process, and a tqdm that reports to the parent."""

from __future__ import annotations

import os


def select(device: str, key: str) -> str:
    """Resolve params' auto|cpu|cuda; `cuda` without a CUDA device is an error naming `key`."""
    from tasks.errors import StageError

    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # libraries that pick "the best device" must see none
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        where = key if key.startswith("--") else f"params.yaml: {key}"  # a command-line option or a params key
        raise StageError(f"{where}: cuda, but torch {torch.__version__} sees no CUDA device; use auto or cpu")
    return "cpu"


def onnx_choice(chosen: str, export_device: str) -> str:
    """The device choice for an ONNX model exported for `export_device`: auto follows the export
    (cuda when this machine has it, else cpu); cpu or cuda as chosen."""
    return "cpu" if chosen == "auto" and export_device != "cuda" else chosen


def reporting_tqdm(channel, bar: str):
    """A tqdm class that also sends each step to the parent's progress bar named `bar`."""
    from tqdm import tqdm

    class _Reporting(tqdm):
        def update(self, n=1):
            shown = super().update(n)
            channel.progress(bar, self.n, self.total)
            return shown

        def __iter__(self):  # tqdm keeps its count in a local while iterating: count here
            channel.progress(bar, 0, self.total)
            for done, item in enumerate(super().__iter__(), start=1):
                yield item
                channel.progress(bar, done, self.total)

    return _Reporting
