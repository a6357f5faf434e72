"""LongRoPE's rotary-cache choice without control flow, so that CUDA graphs can capture the model.

Phi-3/3.5 models with LongRoPE rotate with one of two cos/sin caches: the short factor's while the
sequence fits `original_max_position_embeddings`, the long factor's beyond it. onnxruntime-genai's
builder picks the cache with an `If` node for CPU and CUDA, and onnxruntime refuses to capture a
graph with control flow (it has a branch-free form only for the dml and trt-rtx providers).

`select_without_if` replaces that If with a lookup onnxruntime runs on the GPU:

    seqlens_k (the attention subgraph's, per row) -> max -> > original - 1 -> 0 or 1 -> Gather
    from [short cache padded to the long one's length, long cache]

It decides from the attention mask's contents, not its shape: under CUDA graphs genai gives the
mask its full `max_length` shape from the first token on, so the builder's `Shape -> Greater` test
would pick the long cache for every sequence. Transformers decides per forward pass from the
largest position (`seq_len = max(position_ids) + 1 > original`): the same test.
"""

from __future__ import annotations

import logging

# The builder's names (onnxruntime_genai/models/builders/base.py, make_rotary_embedding_multi_cache).
IF_NODE = "/model/rope_caches_subgraph/If"
SEQLENS = "/model/attn_mask_reformat/attn_mask_subgraph/Sub/Cast/output_0"  # per row: tokens so far - 1
BASE = "/model/rope_caches_subgraph/select"

log = logging.getLogger("tasks")


def _branch_tensors(branch) -> list:
    """The tensors a branch of the builder's If returns, in output order: Constant nodes only."""
    from onnx import numpy_helper

    made = {}
    for node in branch.node:
        if node.op_type != "Constant":
            raise ValueError(f"{IF_NODE}: a branch computes ({node.op_type}); only constant caches are known")
        made[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return [made[out.name] for out in branch.output]


def _constant(graph, name: str):
    """The value of `name`: an initializer or a Constant node's output (the builder makes both)."""
    from onnx import numpy_helper

    for tensor in graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    raise ValueError(f"{name}: not a constant of the graph")


def _choices(short, long):
    """[2, L, d]: the short cache, padded to the long one's length with the long one's rows (never
    read: past `original` tokens the long cache is chosen), then the long cache."""
    import numpy as np

    padded = np.concatenate([short, long[short.shape[0] :]], axis=0)
    return np.stack([padded, long])


def _selector_nodes(original: int) -> tuple[list, object, str]:
    """Nodes computing the index of the cache to use (0: short, 1: long) as a scalar int64 tensor,
    every op one that onnxruntime's CUDA provider runs (float compare: lengths are exact in fp32);
    the threshold they compare with (an initializer); the index's name."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    longest = f"{BASE}/ReduceMax/output_0"
    nodes = [
        helper.make_node("Cast", [SEQLENS], [f"{BASE}/Cast/output_0"], name=f"{BASE}/Cast", to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", [f"{BASE}/Cast/output_0"], [longest], name=f"{BASE}/ReduceMax", keepdims=0),
        helper.make_node(
            "Greater", [longest, f"{BASE}/last_short_position"], [f"{BASE}/Greater/output_0"], name=f"{BASE}/Greater"
        ),
        helper.make_node(
            "Cast", [f"{BASE}/Greater/output_0"], [f"{BASE}/index"], name=f"{BASE}/Cast_1", to=TensorProto.INT64
        ),
    ]
    threshold = numpy_helper.from_array(np.array(original - 1, np.float32), f"{BASE}/last_short_position")
    return nodes, threshold, f"{BASE}/index"


def select_without_if(model) -> bool:
    """Replace the builder's LongRoPE If (in place) by a Gather from both caches; False when the
    graph has no such node. `model` is an onnx ModelProto (weights may stay external)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    found = [i for i, node in enumerate(graph.node) if node.name == IF_NODE and node.op_type == "If"]
    if not found:
        return False
    index = found[0]
    node = graph.node[index]
    greater = next(n for n in graph.node if n.output[0] == node.input[0])
    original = int(_constant(graph, greater.input[1]))
    branches = {attr.name: attr.g for attr in node.attribute}
    longs, shorts = _branch_tensors(branches["then_branch"]), _branch_tensors(branches["else_branch"])
    selector, threshold, chosen = _selector_nodes(original)
    graph.initializer.append(threshold)
    gathers = []
    for out, short, long in zip(node.output, shorts, longs, strict=True):
        table = f"{BASE}/{out}_choices"
        graph.initializer.append(numpy_helper.from_array(_choices(short, long), table))
        gathers.append(helper.make_node("Gather", [table, chosen], [out], name=f"{BASE}/Gather_{out}", axis=0))
    del graph.node[index]
    if not any(greater.output[0] in n.input for n in graph.node):
        graph.node.remove(greater)  # the old test of the mask's shape: nothing reads it now
        index -= 1
    for offset, new in enumerate(selector + gathers):  # where the If was: before its consumers
        graph.node.insert(index + offset, new)
    log.info("LongRoPE: the rotary cache is chosen by a Gather from seqlens_k, not an If (%d tokens)", original)
    return True
