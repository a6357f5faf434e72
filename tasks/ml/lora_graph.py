"""Add LoRA branches to a Phi-3 or Llama ONNX graph built by onnxruntime-genai, and write adapter files.

After each adapted projection y = MatMulNBits(x), the graph computes y + (x @ A) @ B, where A and
B are graph inputs with zero-size defaults: with no adapter the branch adds nothing, and
`og.Adapters` swaps in the trained A and B (alpha / r folded into B) from `.onnx_adapter` files.
The rank is a symbolic dimension, so adapters of different ranks share one graph; an adapter that
trains fewer modules leaves the other branches at their zero-size defaults.
The builder cannot do this itself from an AWQ checkpoint ("'AWQModel' object has no attribute
'named_modules'"), and Olive's route re-quantizes the base with RTN, losing the AWQ grid.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# peft module under model.layers.N -> ONNX projection folders under /model/layers.N/, in B-row order
# (each layout tried in turn: the builder may fuse or split what Hugging Face keeps split or fused).
TARGETS = {
    "self_attn.qkv_proj": (["attn/qkv_proj"], ["attn/q_proj", "attn/k_proj", "attn/v_proj"]),  # Phi-3
    "self_attn.q_proj": (["attn/q_proj"],),  # Llama: exported with fuse_qkv=false (split_qkv below)
    "self_attn.k_proj": (["attn/k_proj"],),
    "self_attn.v_proj": (["attn/v_proj"],),
    "self_attn.o_proj": (["attn/o_proj"],),
    "mlp.gate_up_proj": (["mlp/gate_up_proj"], ["mlp/gate_proj", "mlp/up_proj"]),  # Phi-3
    "mlp.gate_proj": (["mlp/gate_proj"],),  # Llama
    "mlp.up_proj": (["mlp/up_proj"],),
    "mlp.down_proj": (["mlp/down_proj"],),
}
MODULES = sorted({name.split(".")[-1] for name in TARGETS})  # what finetune.target_modules may name
# finetune.target_modules: auto, per model_type: the attention projections (the lab's choice for Phi-3).
AUTO_TARGETS = {"phi3": ["qkv_proj", "o_proj"], "llama": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def resolve_targets(chosen, awq_dir: Path) -> list[str]:
    """finetune.target_modules, with auto resolved by the checkpoint's model family."""
    from tasks.errors import StageError

    if chosen != "auto":
        return list(chosen)
    model_type = json.loads((awq_dir / "config.json").read_text()).get("model_type")
    if model_type not in AUTO_TARGETS:
        raise StageError(
            f"params.yaml: finetune.target_modules: auto knows {sorted(AUTO_TARGETS)}, "
            f"not {model_type}: name the modules"
        )
    return AUTO_TARGETS[model_type]


def split_qkv(target_modules) -> bool:
    """Whether the adapter has separate q/k/v branches, so the graph needs separate q/k/v MatMuls."""
    return bool({"q_proj", "k_proj", "v_proj"} & set(target_modules))


_KEY = re.compile(r"model\.layers\.(\d+)\.(.+)\.lora_([AB])\.weight$")
PROJECTION_OPS = ("MatMulNBits", "MatMul")


def read_adapter(adapter_dir: Path) -> tuple[dict, float]:
    """{(layer, module): {"A": [r, in], "B": [out, r]}} as float32 numpy, and the LoRA scale."""
    from safetensors.numpy import load_file

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    r, alpha = cfg["r"], cfg["lora_alpha"]
    scale = alpha / r**0.5 if cfg.get("use_rslora") else alpha / r
    pairs: dict = {}
    for key, tensor in load_file(adapter_dir / "adapter_model.safetensors").items():
        m = _KEY.search(key)
        if not m:
            raise ValueError(f"{adapter_dir}: unexpected adapter tensor {key}")
        pairs.setdefault((int(m[1]), m[2]), {})[m[3]] = tensor.astype("float32")
    return pairs, scale


def _projection_nodes(nodes_by_prefix: dict, layer: int, module: str) -> list:
    """The ONNX node(s) computing a peft module, trying the fused layout first."""
    for layout in TARGETS[module]:
        found = [nodes_by_prefix.get(f"/model/layers.{layer}/{folder}/") for folder in layout]
        if all(found):
            return found
    raise ValueError(f"no ONNX node for model.layers.{layer}.{module}")


def _features(node) -> tuple[int, int]:
    """(K, N) of an int4 projection: the branch's input and output widths."""
    found = {attr.name: attr.i for attr in node.attribute if attr.name in ("K", "N")}
    if node.op_type != "MatMulNBits" or len(found) != 2:
        raise ValueError(f"{node.name}: a LoRA branch goes on an int4 projection (MatMulNBits), not {node.op_type}")
    return found["K"], found["N"]


def _io_dtype(graph):
    return next(o.type.tensor_type.elem_type for o in graph.output if o.name == "logits")


LAYOUT_FILE = "lora_layout.json"  # beside model.onnx: the LoRA inputs each adapter file fills
PEFT_NAMES = {name.split(".")[-1]: name for name in TARGETS}  # qkv_proj -> self_attn.qkv_proj


def add_lora_inputs(model, layers: int, modules: list[str]) -> dict:
    """Insert a LoRA branch after each target projection of every layer (in place), its A and B
    graph inputs of any rank (the `lora_r` dimension): every adapter trained on a subset of these
    modules, at any rank, fits. Returns the layout the adapter files are written against:
    {"dtype", "branches": {peft module: {"A": {name, in}, "B": [{name, out}, ...]}}}."""
    import numpy as np
    from onnx import helper

    graph = model.graph
    io_type = _io_dtype(graph)
    np_type = helper.tensor_dtype_to_np_dtype(io_type)
    nodes_by_prefix = {}
    for node in graph.node:
        if node.op_type in PROJECTION_OPS:
            nodes_by_prefix[node.name.rsplit("/", 1)[0] + "/"] = node
    after: dict[str, list] = {}  # node name -> branch nodes to insert right after it
    branches = {}
    for layer in range(layers):
        for module in (PEFT_NAMES[m] for m in modules):
            targets = _projection_nodes(nodes_by_prefix, layer, module)
            key = f"model.layers.{layer}.{module}"
            a_name, x, (k, _) = f"{key}.lora_A", targets[0].input[0], _features(targets[0])
            _declare(graph, a_name, io_type, [k, "lora_r"], np.zeros((k, 0), np_type))
            after.setdefault(targets[0].name, []).append(
                helper.make_node("MatMul", [x, a_name], [a_name + "/out"], name=a_name + "/MatMul")
            )
            branches[key] = {"A": {"name": a_name, "in": k}, "B": []}
            for node in targets:
                n = _features(node)[1]
                b_name = node.name.rsplit("/", 1)[0].lstrip("/").replace("/", ".") + ".lora_B"
                _declare(graph, b_name, io_type, ["lora_r", n], np.zeros((0, n), np_type))
                y = node.output[0]
                node.output[0] = y + "/base"
                after.setdefault(node.name, []).extend(
                    [
                        helper.make_node(
                            "MatMul", [a_name + "/out", b_name], [b_name + "/out"], name=b_name + "/MatMul"
                        ),
                        helper.make_node("Add", [y + "/base", b_name + "/out"], [y], name=b_name + "/Add"),
                    ]
                )
                branches[key]["B"].append({"name": b_name, "out": n})
    ordered = []
    for node in graph.node:
        ordered.append(node)
        ordered.extend(after.get(node.name, []))
    del graph.node[:]
    graph.node.extend(ordered)
    return {"dtype": np.dtype(np_type).name, "branches": branches}


def adapter_weights(layout: dict, pairs: dict, scale: float) -> dict:
    """{graph input: weight} of one adapter for a graph built by add_lora_inputs: A transposed, B
    scaled by alpha / r, split over the projection's MatMuls (fused q/k/v) and transposed."""
    import numpy as np

    weights = {}
    for (layer, module), ab in sorted(pairs.items()):
        key = f"model.layers.{layer}.{module}"
        branch = layout["branches"].get(key)
        if branch is None:
            raise ValueError(
                f"the ONNX graph has no LoRA branch for {key}: its module is not among the export's targets"
            )
        if ab["A"].shape[1] != branch["A"]["in"]:
            raise ValueError(
                f"{key}: lora_A reads {ab['A'].shape[1]} features, the graph's projection {branch['A']['in']}"
            )
        weights[branch["A"]["name"]] = np.ascontiguousarray(ab["A"].T).astype(layout["dtype"])
        row = 0
        for b in branch["B"]:
            part = scale * ab["B"][row : row + b["out"]]
            weights[b["name"]] = np.ascontiguousarray(part.T).astype(layout["dtype"])
            row += b["out"]
        if row != ab["B"].shape[0]:
            raise ValueError(f"{key}: lora_B has {ab['B'].shape[0]} rows, the graph wants {row}")
    return weights


def _declare(graph, name: str, elem_type: int, dims: list, default) -> None:
    """A graph input with a same-named initializer: overridable, zero-size when not overridden."""
    from onnx import helper, numpy_helper

    graph.input.append(helper.make_tensor_value_info(name, elem_type, dims))
    graph.initializer.append(numpy_helper.from_array(default, name))


def write_adapter(weights: dict, path: Path) -> None:
    """Save the weights in onnxruntime's adapter format (what `og.Adapters.load` reads)."""
    import onnxruntime as ort

    adapter = ort.AdapterFormat()
    adapter.set_adapter_version(1)
    adapter.set_model_version(1)
    adapter.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in weights.items()})
    adapter.export_adapter(str(path))
