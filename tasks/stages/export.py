"""export: the int4 ONNX model for onnxruntime-genai from the AWQ checkpoint, built once for every
adapter: a LoRA branch (graph inputs of any rank) on each projection any adapter targets. Each
adapter's weights become their own file (stages/adapter.py), so adding or retraining one adapter
leaves this model's bytes alone.

onnxruntime-genai's model builder is called directly (through tasks/ml/genai_builder.py): Olive
0.13's ModelBuilder pass targets the builder API that genai >= 0.15 removed (../shared/notes/stack.md).
The builder repacks the AWQ weights as they are, so the ONNX base keeps the AWQ grid instead of being
quantized again.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tasks.engine.stage import Stage
from tasks.ml.genai import check_config


def _choices(params) -> list:
    """Each adapter's finetune.target_modules: a list of modules, or `auto`."""
    return [params.for_adapter(a).finetune.target_modules for a in params.adapter_names]


def lora_targets(params) -> dict:
    """The modules any adapter targets, as params name them (`auto` is resolved by the checkpoint)."""
    return {"lora_targets": sorted({m for c in _choices(params) for m in ([c] if c == "auto" else c)})}


STAGE = Stage(
    name="export",
    module=__name__,
    doc="Build the int4 ONNX model (onnxruntime-genai) with LoRA inputs for every adapter",
    output="models/{name}/onnx-ao/model",
    upstream=("quantize",),
    derived=lora_targets,
    # The genai builder is run as a module (runpy: no import to find): it and what it loads.
    libraries=("onnxruntime-genai", "onnxruntime-genai-cuda", "onnxruntime", "onnxruntime-gpu", "torch", "tokenizers"),
    params=("export",),
    verify=check_config,  # a copy from the run-cache or a remote loads no library from elsewhere
)


def builder_args(awq_dir: Path, out: Path, cache: Path, cfg, split_qkv: bool) -> list[str]:
    """The genai builder's command-line arguments for this export."""
    from tasks.ml.awq_weights import ships_code

    extra = [f"accuracy_level={cfg.accuracy_level}"]
    if ships_code(awq_dir):
        extra.append("hf_remote=true")  # the checkpoint's own code, which params trusted (stages/base.py)
    if not cfg.int4_lm_head:
        # AWQ leaves lm_head in float; so do we, and the embeddings too: with tied embeddings (Llama,
        # SmolLM2) the builder would otherwise share one int4 table for both (13 % logits error on
        # the tiny Llama); excluded, the tied matrix stays one float table.
        extra.append("nodes_to_exclude=/lm_head/MatMul,/model/embed_tokens/Gather")
    if wants_graphs(cfg):
        extra.append("enable_cuda_graph=true")  # genai captures the decode step once, replays it per token
    if split_qkv:
        # One MatMul per q/k/v projection, for their own LoRA branches (export.fuse_lora: false).
        # genai 0.15 (the CUDA pin) knows only the older name, 0.18 both (the newer wins, the older
        # draws a warning).
        extra += ["fuse_qkv=false", "disable_qkv_fusion=true"]
    return [
        "-i",
        str(awq_dir),
        "-o",
        str(out),
        "-p",
        "int4",
        "-e",
        cfg.device,
        "-c",
        str(cache),
        "--extra_options",
        *extra,
    ]


def run(params, paths, out: Path, channel) -> dict:
    import onnx

    from tasks.ml import genai_builder
    from tasks.ml.longrope import select_without_if
    from tasks.ml.lora_graph import LAYOUT_FILE, add_lora_inputs, resolve_targets, split_qkv

    awq = paths.output("quantize")
    targets = sorted({m for c in _choices(params) for m in resolve_targets(c, awq)})

    with tempfile.TemporaryDirectory(prefix=".export-", dir=paths.models) as scratch:
        channel.progress("build ONNX, add LoRA", 0, 3)
        # The builder (its int4 packing word-wise on 0.15: tasks/ml/genai_builder.py) prints to the log.
        split = split_qkv(targets, params.export.fuse_lora)
        genai_builder.run(builder_args(awq, out, Path(scratch), params.export, split), Path(scratch))
    channel.progress("build ONNX, add LoRA", 1, 3)
    model_file = out / "model.onnx"
    model = onnx.load(model_file, load_external_data=False)  # weights stay in model.onnx.data
    if wants_graphs(params.export):
        select_without_if(model)  # LongRoPE's If (Phi-3.5) would keep CUDA graphs off
    config = json.loads((awq / "config.json").read_text())
    layout = add_lora_inputs(model, config, targets, fuse=params.export.fuse_lora)
    onnx.save(model, model_file)
    graphs = cuda_graphs(out, params.export)
    channel.progress("build ONNX, add LoRA", 2, 3)
    (out / LAYOUT_FILE).write_text(json.dumps(layout, indent=1) + "\n")
    channel.progress("build ONNX, add LoRA", 3, 3)
    summary = {
        "device": params.export.device,
        "lora_branches": len(layout["branches"]),
        "lora_targets": ",".join(targets),
    }
    return summary | ({"cuda_graph": graphs} if graphs else {})


def wants_graphs(cfg) -> bool:
    return cfg.device == "cuda" and cfg.cuda_graph


def cuda_graphs(out: Path, cfg) -> str | None:
    """For a CUDA export with export.cuda_graph: "on", or "off" when the graph still has control-flow
    nodes (onnxruntime would refuse every session); None otherwise."""
    import logging

    from tasks.ml.genai import control_flow, set_cuda_graph

    if not wants_graphs(cfg):
        return None
    flow = control_flow(out)
    if not flow:
        return "on"
    set_cuda_graph(out, on=False)
    why = f"off: the graph has {', '.join(flow)} nodes, which CUDA graphs cannot capture"
    logging.getLogger("tasks").warning("export.cuda_graph: %s", why)
    return why
