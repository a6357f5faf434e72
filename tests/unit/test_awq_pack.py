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


def test_pack_int4_order():
    values = torch.arange(8, dtype=torch.int32).view(1, 8)
    # nibble i of the word holds column AWQ_ORDER[i]: 0, 2, 4, 6, 1, 3, 5, 7
    assert awq_pack.pack_int4(values).item() == int("75316420", 16)
