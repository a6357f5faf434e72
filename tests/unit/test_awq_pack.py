"""The vectorized AWQ packing gives exactly AutoAWQ's bytes (it replaces a per-column Python loop)."""

from __future__ import annotations

import pytest
import torch

from tasks.ml import awq_pack


def _quantized_linear(out_features: int, in_features: int, group: int, seed: int):
    """A half-precision linear layer after AutoAWQ's pseudo-quantization, and its scales and zeros."""
    from awq.quantize.quantizer import AwqQuantizer

    torch.manual_seed(seed)
    linear = torch.nn.Linear(in_features, out_features, bias=False).half()
    quantizer = AwqQuantizer.__new__(AwqQuantizer)  # only its tensor math is used
    quantizer.group_size, quantizer.zero_point, quantizer.w_bit = group, True, 4
    linear.weight.data, scales, zeros = quantizer.pseudo_quantize_tensor(linear.weight.data)
    return linear, scales.t().contiguous(), zeros.t().contiguous()


@pytest.mark.parametrize(("out_features", "in_features"), [(384, 256), (256, 512), (1024, 128)])
def test_vectorized_packing_is_bit_identical_to_autoawq(out_features, in_features):
    from awq.modules.linear.gemm import WQLinear_GEMM

    linear, scales, zeros = _quantized_linear(out_features, in_features, 128, seed=out_features)
    theirs = WQLinear_GEMM.from_linear(linear, 4, 128, scales=scales, zeros=zeros)
    ours = awq_pack.from_linear(WQLinear_GEMM, linear, 4, 128, scales=scales, zeros=zeros)
    for name in ("qweight", "qzeros", "scales"):
        assert torch.equal(getattr(ours, name), getattr(theirs, name)), name
    assert ours.qweight.dtype == torch.int32 and ours.qweight.shape == (in_features, out_features // 8)


def test_dequantizing_gives_autoawqs_own_weights():
    """awq_weights unpacks without AutoAWQ (its import costs seconds): AutoAWQ's dequantize_gemm's values."""
    from awq.modules.linear.gemm import WQLinear_GEMM
    from awq.utils.packing_utils import dequantize_gemm

    from tasks.ml.awq_weights import dequantize_tensors

    linear, scales, zeros = _quantized_linear(384, 512, 128, seed=7)
    packed = awq_pack.from_linear(WQLinear_GEMM, linear, 4, 128, scales=scales, zeros=zeros)
    ours = dequantize_tensors(
        {"l.qweight": packed.qweight, "l.qzeros": packed.qzeros, "l.scales": packed.scales}, 4, 128
    )
    theirs = dequantize_gemm(packed.qweight, packed.qzeros, packed.scales.float(), 4, 128).t()
    assert torch.equal(ours["l.weight"], theirs) and ours["l.weight"].shape == (384, 512)
    assert torch.equal(
        awq_pack.unpack_int4(awq_pack.pack_int4(torch.arange(16, dtype=torch.int32).view(2, 8) % 16)),
        torch.arange(16, dtype=torch.int32).view(2, 8),
    )


def test_pack_int4_order():
    values = torch.arange(8, dtype=torch.int32).view(1, 8)
    # nibble i of the word holds column AWQ_ORDER[i]: 0, 2, 4, 6, 1, 3, 5, 7
    assert awq_pack.pack_int4(values).item() == int("75316420", 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compares the GPU path: needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_dequantizing_on_the_gpu_gives_the_cpu_bytes(dtype):
    """finetune and evaluate dequantize on their device: integer ops, one fp32 product and one
    rounding to `dtype`, so the frozen base they train against is the same on either."""
    from awq.modules.linear.gemm import WQLinear_GEMM

    from tasks.ml.awq_weights import dequantize_tensors

    linear, scales, zeros = _quantized_linear(512, 384, 128, seed=3)
    packed = awq_pack.from_linear(WQLinear_GEMM, linear, 4, 128, scales=scales, zeros=zeros)
    state = {f"l.{name}": getattr(packed, name) for name in ("qweight", "qzeros", "scales")}
    on = {
        dev: dequantize_tensors({k: v.to(dev) for k, v in state.items()}, 4, 128)["l.weight"] for dev in ("cpu", "cuda")
    }
    assert torch.equal(on["cpu"].to(dtype), on["cuda"].to(dtype).cpu())


@pytest.mark.parametrize(
    "grid",
    [
        None,
        {"quant_method": "awq", "bits": 8, "group_size": 128, "version": "gemm"},
        {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemv"},
    ],
)
def test_a_checkpoint_that_is_not_4_bit_gemm_awq_is_refused_naming_its_config(tmp_path, grid):
    """A checkpoint put in the AWQ folder by hand (params allow only w_bit 4): a clear error naming
    its config.json, before any weight is read, and nothing written."""
    import json

    from tasks.errors import StageError
    from tasks.ml.awq_weights import write_dequantized

    config = {"model_type": "phi3", **({"quantization_config": grid} if grid else {})}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(StageError, match=f"{tmp_path / 'config.json'}: quantization_config is"):
        write_dequantized(tmp_path, tmp_path / "out", "float32")
    assert not (tmp_path / "out").exists()
