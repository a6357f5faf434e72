"""Stand-in stage bodies that write artifacts of the lab's full sizes (benchmark only).

The up-to-date machinery (fingerprints, DVC records, integrity checks) is the real one; only the
work inside each stage is replaced, so a no-op build can be timed over 10 GB of real files.
"""

from __future__ import annotations

import os
from pathlib import Path

GB = 1000**3
# Phi-3.5-mini-instruct: two fp16 safetensors shards (7.64 GB); its int4 ONNX: ~2.3 GB of weights.
# Keyed by output folder name (models/<name>/base, models/<name>/onnx-ao/model).
SIZES = {
    "base": {"model-00001-of-00002.safetensors": int(4.97 * GB), "model-00002-of-00002.safetensors": int(2.67 * GB)},
    "model": {"model.onnx.data": int(2.3 * GB), "model.onnx": 300_000},
}
BLOCK = os.urandom(1 << 20)


def _write(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for _ in range(size // len(BLOCK)):
            f.write(BLOCK)
        f.write(BLOCK[: size % len(BLOCK)])


def run(params, paths, out: Path, channel) -> dict:
    folder = out.name.split("-")[1]  # the child stages into .tmp-<folder>-<pid>
    for name, size in SIZES.get(folder, {"result.json": 1000}).items():
        _write(out / name, size)
    if folder == "model":  # what a restored export is checked for (tasks/ml/genai.py check_config)
        (out / "genai_config.json").write_text('{"model": {"decoder": {"filename": "model.onnx"}}}\n')
    return {}
