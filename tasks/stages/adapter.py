"""adapter: one adapter's LoRA weights as an `.onnx_adapter` file for the shared ONNX model.

The weights are laid out for the graph's LoRA inputs (the export's lora_layout.json): A transposed,
B scaled by alpha / r and split as the graph splits the projection. `og.Adapters` loads the file
and a generator switches to it per request; the model itself is never rebuilt for an adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.engine.stage import Stage

STAGE = Stage(
    name="adapter",
    module=__name__,
    doc="Write an adapter's LoRA weights as adapter_weights.onnx_adapter for the ONNX model",
    output="models/{name}/onnx-ao/adapters/{adapter}",
    upstream=("export", "finetune"),
)


def run(params, paths, out: Path, channel) -> dict:
    from tasks.errors import StageError
    from tasks.ml.lora_graph import LAYOUT_FILE, adapter_weights, read_adapter, write_adapter
    from tasks.paths import ADAPTER_FILE

    layout = json.loads((paths.output("export") / LAYOUT_FILE).read_text())
    pairs, scale = read_adapter(paths.output("finetune"))
    try:
        weights = adapter_weights(layout, pairs, scale)
    except ValueError as exc:
        raise StageError(f"adapter {paths.adapter}: {exc}") from None
    write_adapter(weights, out / ADAPTER_FILE)
    rank = next(iter(pairs.values()))["A"].shape[0]
    return {"lora_branches": len(pairs), "tensors": len(weights), "lora_r": rank, "dtype": layout["dtype"]}
