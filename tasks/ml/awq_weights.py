"""Read AWQ GEMM checkpoints as plain weights: W = (q - z) * s per group, computed exactly in fp32."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "generation_config.json",
    "special_tokens_map.json",
)


def dequantized(state: dict, bits: int, group_size: int):
    """(name, tensor) of the checkpoint with every AWQ (qweight, qzeros, scales) triple as one float32
    `weight` [out, in], one at a time (on a GPU, Phi-3.5 in float32 at once would take 15 GB).

    AutoAWQ's GEMM layout (nibble order [0,2,4,6,1,3,5,7]: tasks/ml/awq_pack.py), unpacked as its own
    dequantize_gemm does (tests/unit/test_awq_pack.py), without importing AutoAWQ: its package
    imports every model it supports, 5 s of a stage on 2 cores. Scales are upcast first so that
    (q - z) * s is exact rather than rounded to fp16.
    """
    from tasks.ml.awq_pack import unpack_int4

    if bits != 4:
        raise ValueError(f"AWQ GEMM checkpoints hold 4-bit weights, not {bits}")
    per_row = lambda t: t.repeat_interleave(group_size, dim=0)  # noqa: E731  [groups, out] -> [in, out]
    for key, tensor in state.items():
        if key.endswith(".qweight"):
            prefix = key[: -len(".qweight")]
            zeros, scales = unpack_int4(state[prefix + ".qzeros"]), state[prefix + ".scales"].float()
            yield prefix + ".weight", ((unpack_int4(tensor) - per_row(zeros)) * per_row(scales)).t().contiguous()
        elif not key.endswith((".qzeros", ".scales")):
            yield key, tensor.float() if tensor.is_floating_point() else tensor


def dequantize_tensors(state: dict, bits: int, group_size: int) -> dict:
    """The whole checkpoint dequantized to float32 (dequantized() says how)."""
    return dict(dequantized(state, bits, group_size))


def load_awq_state(awq_dir: Path, device: str = "cpu") -> dict:
    from safetensors.torch import load_file

    state = {}
    for shard in sorted(awq_dir.glob("*.safetensors")):
        state.update(load_file(shard, device=device))
    return state


def dequantized_state(awq_dir: Path, dtype: str, device: str = "cpu") -> dict:
    """The AWQ checkpoint's weights as plain tensors in `dtype`, dequantized on `device`: the same
    bytes on a GPU (integer ops, one fp32 product, one rounding), in a second instead of ~30 on a
    16-core host for Phi-3.5 (BENCHMARKS.md)."""
    import torch

    qcfg = _awq_grid(json.loads((awq_dir / "config.json").read_text()), awq_dir / "config.json")
    torch_dtype = getattr(torch, dtype)
    weights = dequantized(load_awq_state(awq_dir, device), qcfg["bits"], qcfg["group_size"])
    return {k: v.to(torch_dtype) if v.is_floating_point() else v for k, v in weights}


def write_plain_config(awq_dir: Path, out: Path, dtype: str) -> None:
    """The AWQ checkpoint's config (without quantization_config, in `dtype`) and tokenizer files,
    as an ordinary HF checkpoint folder holds them."""
    config = json.loads((awq_dir / "config.json").read_text())
    _awq_grid(config, awq_dir / "config.json")
    config["dtype"] = dtype
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in SIDE_FILES:
        if (awq_dir / name).exists():
            shutil.copy(awq_dir / name, out / name)


def write_dequantized(awq_dir: Path, out: Path, dtype: str, device: str = "cpu") -> None:
    """Write the AWQ checkpoint as an ordinary HF checkpoint in `dtype`, dequantized on `device`."""
    from safetensors.torch import save_file

    state = {k: v.cpu() for k, v in dequantized_state(awq_dir, dtype, device).items()}
    write_plain_config(awq_dir, out, dtype)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})


def load_dequantized(awq_dir: Path, dtype: str, device: str = "cpu"):
    """The AWQ checkpoint as a transformers model in `dtype` on `device`, dequantized in memory:
    the model write_dequantized's folder loads as, without writing and reading its weights (7.6 GB
    for Phi-3.5). A checkpoint with its own modeling code (trusted: ships_code) is loaded from a
    written folder, where transformers finds that code."""
    import tempfile

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    torch_dtype = getattr(torch, dtype)
    with tempfile.TemporaryDirectory() as folder:
        if ships_code(awq_dir):
            write_dequantized(awq_dir, Path(folder), dtype, device)
            return AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, trust_remote_code=True).to(device)
        write_plain_config(awq_dir, Path(folder), dtype)
        config = AutoConfig.from_pretrained(folder)
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    state = dequantized_state(awq_dir, dtype, device)
    # device_map keeps the weights where dequantized_state made them; without it transformers loads
    # them to the host and .to(device) copies them back (4 s for Phi-3.5 on an H100, BENCHMARKS.md).
    kwargs = {"config": config, "state_dict": state, "dtype": torch_dtype, "device_map": {"": device}}
    with _no_allocator_warmup():
        return model_class.from_pretrained(None, **kwargs)


def _no_allocator_warmup():
    """With a device_map, transformers first reserves the model's size on the GPU (modeling_utils'
    caching_allocator_warmup) to speed up copies from disk. Here the weights are on the GPU already:
    the reservation would only add their size to every later peak (7.6 GB for Phi-3.5)."""
    from unittest import mock

    from transformers import modeling_utils

    return mock.patch.object(modeling_utils, "caching_allocator_warmup", lambda *args, **kwargs: None)


def _awq_grid(config: dict, where: Path) -> dict:
    """The checkpoint's quantization_config, removed from `config`; a clear error for anything but
    AutoAWQ's 4-bit GEMM layout (a checkpoint put there by hand: params allow only w_bit 4)."""
    from tasks.errors import StageError

    qcfg = config.pop("quantization_config", None) or {}
    found = (qcfg.get("quant_method"), qcfg.get("bits"), str(qcfg.get("version", "")).lower())
    if found[:2] != ("awq", 4) or found[2] != "gemm" or not isinstance(qcfg.get("group_size"), int):
        raise StageError(
            f"{where}: quantization_config is {qcfg or 'missing'}; expected AutoAWQ's 4-bit GEMM checkpoint "
            "(quant_method awq, bits 4, version gemm, an integer group_size)"
        )
    return qcfg


def ships_code(checkpoint: Path) -> bool:
    """Whether a checkpoint runs its own Python (auto_map). The base keeps auto_map only when params
    trust remote code (stages/base.py), so every later library is told the same: trust it exactly then."""
    return bool(json.loads((checkpoint / "config.json").read_text()).get("auto_map"))
