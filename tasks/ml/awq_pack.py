"""Where the project adapts AutoAWQ 0.2.9's packing: its int4 packing without a Python loop per column
(its searches: tasks/ml/awq_search.py).

AutoAWQ 0.2.9 rounds the weights one input column at a time and packs the nibbles one output
column at a time: tens of thousands of tiny kernel launches per linear layer, about 70 s of a
Phi-3.5-mini quantization on an H100 (a quarter of the stage; profile in BENCHMARKS.md). The same
element-wise operations on whole tensors give bit-identical results (tests/unit/test_awq_pack.py), so
the quantized model does not change, only the time it takes.
"""

from __future__ import annotations

import torch

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # the GEMM kernel's nibble order within a 32-bit word


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """[rows, cols] int32 nibbles -> [rows, cols / 8] int32 words, AutoAWQ's order."""
    rows, cols = values.shape
    grouped = values.view(rows, cols // 8, 8)
    packed = torch.zeros((rows, cols // 8), dtype=torch.int32, device=values.device)
    for i, column in enumerate(AWQ_ORDER):
        packed |= grouped[:, :, column] << (i * 4)
    return packed


def unpack_int4(words: torch.Tensor) -> torch.Tensor:
    """[rows, cols / 8] int32 words -> [rows, cols] int32 nibbles: pack_int4's inverse."""
    shifts = torch.tensor([4 * AWQ_ORDER.index(c) for c in range(8)], dtype=torch.int32, device=words.device)
    return ((words.unsqueeze(-1) >> shifts) & 0xF).view(words.shape[0], -1)


def from_linear(cls, linear, w_bit, group_size, init_only=False, scales=None, zeros=None):
    """Drop-in for WQLinear_GEMM.from_linear (4 bits, GEMM layout): same arguments, same result."""
    awq_linear = cls(
        w_bit, group_size, linear.in_features, linear.out_features, linear.bias is not None, linear.weight.device
    )
    if init_only:
        return awq_linear
    assert scales is not None and zeros is not None and w_bit == 4
    scale_zeros = zeros * scales  # [groups, out]
    awq_linear.scales = scales.clone().half()
    if linear.bias is not None:
        awq_linear.bias = linear.bias.clone().half()
    # AutoAWQ: for each input column idx, round((W[:, idx] + scale_zeros[g]) / scales[g]), g = idx // group.
    per_column = lambda t: t.repeat_interleave(group_size, dim=0).t()  # noqa: E731  [groups, out] -> [out, in]
    intweight = torch.round((linear.weight.data + per_column(scale_zeros)) / per_column(awq_linear.scales))
    awq_linear.qweight = pack_int4(intweight.to(torch.int).t().contiguous().to(torch.int32))
    awq_linear.qzeros = pack_int4(zeros.to(dtype=torch.int32, device=linear.weight.device).contiguous())
    return awq_linear


def install() -> None:
    """Make AutoAWQ's quantizer pack with whole tensors."""
    from awq.modules.linear.gemm import WQLinear_GEMM

    WQLinear_GEMM.from_linear = classmethod(from_linear)
