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
import os
import subprocess
import sys
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
    # The genai builder runs as a program (no import to find): it and what it loads.
    libraries=("onnxruntime-genai", "onnxruntime-genai-cuda", "onnxruntime", "onnxruntime-gpu", "torch", "tokenizers"),
    params=("export",),
    verify=check_config,  # a copy from the run-cache or a remote loads no library from elsewhere
)


def builder_command(
    awq_dir: Path, out: Path, cache: Path, cfg, split_qkv: bool, profile_to: Path | None = None
) -> list[str]:
    from tasks.ml import genai_builder
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
    # Under LAB_PROFILE the builder's own process is profiled too (the stage's profile sees a wait).
    profile = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
    return [
        sys.executable,
        *profile,
        "-m",
        genai_builder.__name__,  # the builder, its int4 packing word-wise on 0.15 (tasks/ml/genai_builder.py)
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

    from tasks.engine.protocol import die_with_parent
    from tasks.ml.longrope import select_without_if
    from tasks.ml.lora_graph import LAYOUT_FILE, add_lora_inputs, resolve_targets, split_qkv

    awq = paths.output("quantize")
    targets = sorted({m for c in _choices(params) for m in resolve_targets(c, awq)})

    with tempfile.TemporaryDirectory(prefix=".export-", dir=paths.models) as scratch:
        channel.progress("build ONNX, add LoRA", 0, 3)
        # The builder runs as its own process: it prints freely and loads the checkpoint fresh.
        subprocess.run(
            builder_command(
                awq,
                out,
                Path(scratch),
                params.export,
                split_qkv(targets, params.export.fuse_lora),
                _profile_file(paths),
            ),
            check=True,
            cwd=scratch,
            env=builder_env(paths.root, Path(scratch)),
            stdout=sys.stderr,
            preexec_fn=die_with_parent,
        )
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


def builder_env(root: Path, scratch: Path) -> dict:
    """The builder process's environment.
    - PYTHONPATH starts at this project: `-m tasks.ml.genai_builder` runs from the scratch folder, where
      a venv shared with another checkout (an editable install of that one) would find its wrapper,
      not the one this project's fingerprint holds.
    - The builder stamps model.onnx with `git rev-parse HEAD` run five folders above its own file:
      inside this checkout when .venv is in it, so every commit changed the model's bytes. With no
      repository to find (GIT_DIR) it takes the wheel's own commit."""
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "GIT_DIR": str(scratch / "no-repository")}


def _profile_file(paths) -> Path | None:
    """logs/export.builder.prof when LAB_PROFILE is set (tasks/engine/child.py profiles the stage)."""
    from tasks.engine.child import PROFILE_ENV

    return paths.logs / "export.builder.prof" if os.environ.get(PROFILE_ENV) else None


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
