"""Add LoRA branches to a Phi-3 or Llama ONNX graph built by onnxruntime-genai, and write adapter files.

After each adapted projection y = MatMulNBits(x), the graph computes y + (x @ A) @ B, where A and
B are graph inputs with zero-size defaults: with no adapter the branch adds nothing, and
`og.Adapters` swaps in the trained A and B (alpha / r folded into B) from `.onnx_adapter` files.
The rank is a symbolic dimension, so adapters of different ranks share one graph; an adapter that
trains fewer modules leaves the other branches at their zero-size defaults.

Decoding one token is a chain of small kernels, and each branch adds three (two MatMuls, an Add).
Fused (export.fuse_lora, the default), one branch serves every target that reads the same input:
Llama's q, k and v become one int4 MatMul with one branch, whose A stacks the three modules'
A matrices and whose B holds each module's B in its own rows and columns (zeros elsewhere): 6
kernels a layer instead of 12 for SmolLM2's q/k/v/o adapter, the same sums.
The builder cannot do this itself from an AWQ checkpoint ("'AWQModel' object has no attribute
'named_modules'"), and Olive's route re-quantizes the base with RTN, losing the AWQ grid.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# peft module under model.layers.N -> where its output columns are in the ONNX graph: (projection
# folder under /model/layers.N/, share) per node, one layout after another (the builder may fuse or
# split what Hugging Face keeps split or fused). share None: the node's whole output; "q", "k", "v":
# that part of a fused q/k/v projection.
TARGETS = {
    "self_attn.qkv_proj": (
        [("attn/qkv_proj", None)],
        [("attn/q_proj", None), ("attn/k_proj", None), ("attn/v_proj", None)],
    ),
    "self_attn.q_proj": ([("attn/qkv_proj", "q")], [("attn/q_proj", None)]),  # Llama
    "self_attn.k_proj": ([("attn/qkv_proj", "k")], [("attn/k_proj", None)]),
    "self_attn.v_proj": ([("attn/qkv_proj", "v")], [("attn/v_proj", None)]),
    "self_attn.o_proj": ([("attn/o_proj", None)],),
    "mlp.gate_up_proj": ([("mlp/gate_up_proj", None)], [("mlp/gate_proj", None), ("mlp/up_proj", None)]),  # Phi-3
    "mlp.gate_proj": ([("mlp/gate_proj", None)],),  # Llama
    "mlp.up_proj": ([("mlp/up_proj", None)],),
    "mlp.down_proj": ([("mlp/down_proj", None)],),
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


def split_qkv(target_modules, fuse: bool) -> bool:
    """Whether the export needs separate q/k/v MatMuls: only unfused, for separate q/k/v branches."""
    return not fuse and bool({"q_proj", "k_proj", "v_proj"} & set(target_modules))


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


def qkv_columns(config: dict) -> dict:
    """The q, k and v column ranges of a fused q/k/v projection (the builder's order)."""
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    q, kv = heads * head_dim, config.get("num_key_value_heads", heads) * head_dim
    return {"q": (0, q), "k": (q, q + kv), "v": (q + kv, q + 2 * kv)}


def _placement(nodes_by_prefix: dict, layer: int, module: str, columns: dict) -> list:
    """[(node, first column, last column + 1)] of a peft module's output, trying each layout in turn."""
    for layout in TARGETS[module]:
        found = [nodes_by_prefix.get(f"/model/layers.{layer}/{folder}/") for folder, _ in layout]
        if all(found):
            widths = [_features(node)[1] for node in found]
            spans = [
                (0, width) if share is None else columns[share]
                for width, (_, share) in zip(widths, layout, strict=True)
            ]
            if any(end > width for width, (_, end) in zip(widths, spans, strict=True)):
                raise ValueError(f"model.layers.{layer}.{module}: wider than its ONNX projection")
            return [(node, *span) for node, span in zip(found, spans, strict=True)]
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


def _folder(node) -> str:
    """A projection node's folder, dotted: /model/layers.0/attn/qkv_proj/MatMul -> model.layers.0.attn.qkv_proj."""
    return node.name.rsplit("/", 1)[0].lstrip("/").replace("/", ".")


def _branch_name(nodes: list) -> str:
    """model.layers.0.attn.qkv_proj, or model.layers.0.mlp.gate_proj+up_proj for nodes sharing an input."""
    folders = [_folder(node) for node in nodes]
    return folders[0] + "".join("+" + f.rsplit(".", 1)[1] for f in folders[1:])


def _branches(nodes_by_prefix: dict, layers: int, modules: list[str], columns: dict, fuse: bool):
    """{branch: [nodes]} and {peft module key: (branch, [(node, first, end)])}. Fused, a branch is
    every target node that reads one input (one A for all); else one branch per peft module."""
    groups: dict[str, list] = {}
    placed = {}
    for layer in range(layers):
        for module in (PEFT_NAMES[m] for m in modules):
            parts = _placement(nodes_by_prefix, layer, module, columns)
            key = f"model.layers.{layer}.{module}"
            group = f"{layer}:{parts[0][0].input[0]}" if fuse else key
            members = groups.setdefault(group, [])
            members.extend(node for node, _, _ in parts if node not in members)
            placed[key] = (group, parts)
    names = {group: _branch_name(nodes) for group, nodes in groups.items()}
    return {names[g]: nodes for g, nodes in groups.items()}, {k: (names[g], p) for k, (g, p) in placed.items()}


def add_lora_inputs(model, config: dict, modules: list[str], fuse: bool = True) -> dict:
    """Insert LoRA branches after the target projections of every layer (in place): per branch an A
    graph input (x @ A, once for every node of the branch) and per node a B input (y += (x @ A) @ B),
    of any rank. Adapters trained on any subset of these modules, at any rank, fit. Returns the
    layout the adapter files are written against: {"dtype", "branches": {name: {"A": {name, in},
    "B": [{name, out}]}}, "modules": {peft module: {"branch", "parts": [[B index, first, end]]}}}."""
    import numpy as np
    from onnx import helper

    graph = model.graph
    io_type = _io_dtype(graph)
    np_type = helper.tensor_dtype_to_np_dtype(io_type)
    nodes_by_prefix = {n.name.rsplit("/", 1)[0] + "/": n for n in graph.node if n.op_type in PROJECTION_OPS}
    groups, placed = _branches(nodes_by_prefix, config["num_hidden_layers"], modules, qkv_columns(config), fuse)
    after: dict[str, list] = {}  # node name -> branch nodes to insert right after it
    branches = {}
    for name, nodes in groups.items():
        a_name, rank, (k, _) = f"{name}.lora_A", f"{name}.r", _features(nodes[0])
        _declare(graph, a_name, io_type, [k, rank], np.zeros((k, 0), np_type))
        first = nodes[0]
        after.setdefault(first.name, []).append(
            helper.make_node("MatMul", [first.input[0], a_name], [a_name + "/out"], name=a_name + "/MatMul")
        )
        branches[name] = {"A": {"name": a_name, "in": k}, "B": []}
        for node in nodes:
            n = _features(node)[1]
            b_name = _folder(node) + ".lora_B"
            _declare(graph, b_name, io_type, [rank, n], np.zeros((0, n), np_type))
            y = node.output[0]
            node.output[0] = y + "/base"
            after.setdefault(node.name, []).extend(
                [
                    helper.make_node("MatMul", [a_name + "/out", b_name], [b_name + "/out"], name=b_name + "/MatMul"),
                    helper.make_node("Add", [y + "/base", b_name + "/out"], [y], name=b_name + "/Add"),
                ]
            )
            branches[name]["B"].append({"name": b_name, "out": n})
    ordered = []
    for node in graph.node:
        ordered.append(node)
        ordered.extend(after.get(node.name, []))
    del graph.node[:]
    graph.node.extend(ordered)
    modules_out = {
        key: {"branch": name, "parts": [[groups[name].index(node), lo, hi] for node, lo, hi in parts]}
        for key, (name, parts) in placed.items()
    }
    return {"dtype": np.dtype(np_type).name, "branches": branches, "modules": modules_out}


def adapter_weights(layout: dict, pairs: dict, scale: float) -> dict:
    """{graph input: weight} of one adapter for a graph built by add_lora_inputs. Per branch, the
    adapter's modules stack their ranks: A = [A_1.T | A_2.T ...]; each B holds, in a module's rows,
    its B (scaled by alpha / r, transposed) in the module's columns, zeros elsewhere."""
    import numpy as np

    by_branch: dict[str, list] = {}
    for (layer, module), ab in sorted(pairs.items()):
        key = f"model.layers.{layer}.{module}"
        place = layout["modules"].get(key)
        if place is None:
            raise ValueError(
                f"the ONNX graph has no LoRA branch for {key}: its module is not among the export's targets"
            )
        branch = layout["branches"][place["branch"]]
        if ab["A"].shape[1] != branch["A"]["in"]:
            raise ValueError(
                f"{key}: lora_A reads {ab['A'].shape[1]} features, the graph's projection {branch['A']['in']}"
            )
        wanted = sum(hi - lo for _, lo, hi in place["parts"])
        if ab["B"].shape[0] != wanted:
            raise ValueError(f"{key}: lora_B has {ab['B'].shape[0]} rows, the graph wants {wanted}")
        by_branch.setdefault(place["branch"], []).append((ab, place["parts"]))
    weights = {}
    for name, members in by_branch.items():
        branch = layout["branches"][name]
        a = np.concatenate([ab["A"].T for ab, _ in members], axis=1)
        bs = [np.zeros((a.shape[1], b["out"]), np.float32) for b in branch["B"]]
        row = 0
        for ab, parts in members:
            rank, out_row = ab["A"].shape[0], 0
            for index, lo, hi in parts:
                bs[index][row : row + rank, lo:hi] = scale * ab["B"][out_row : out_row + hi - lo].T
                out_row += hi - lo
            row += rank
        weights[branch["A"]["name"]] = np.ascontiguousarray(a).astype(layout["dtype"])
        for b, value in zip(branch["B"], bs, strict=True):
            weights[b["name"]] = value.astype(layout["dtype"])
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
