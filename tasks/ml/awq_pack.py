"""Where the project adapts AutoAWQ 0.2.9: its int4 packing without a Python loop per column, and
its scale search made correct on the CPU.

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


def with_real_copies(compute_best_scale):
    """Wrap AwqQuantizer._compute_best_scale so that, on the CPU, the weights it saves are copies.

    It saves them with `{k: v.cpu() for k, v in module.state_dict().items()}` and reloads them after
    each grid step. On CUDA `.cpu()` copies; on the CPU it returns the same tensors, so the first
    step's in-place `fc.weight.mul_(scales)` is what gets "restored": every scaled layer kept a stray
    per-channel factor (a real model answered "EEEE..."; tests/unit/test_awq_cpu.py). On the GPU nothing
    changes, so its bytes stay AutoAWQ's own.
    """

    def compute(self, x, w_mean, x_mean, module2inspect, *args, **kwargs):
        if next(module2inspect.parameters()).device.type != "cpu":
            return compute_best_scale(self, x, w_mean, x_mean, module2inspect, *args, **kwargs)
        state_dict = module2inspect.state_dict
        module2inspect.state_dict = lambda *a, **k: {n: t.detach().clone() for n, t in state_dict(*a, **k).items()}
        try:
            return compute_best_scale(self, x, w_mean, x_mean, module2inspect, *args, **kwargs)
        finally:
            del module2inspect.state_dict  # the class's method again

    compute.copies_on_cpu = True
    return compute


def install() -> None:
    """Make AutoAWQ's quantizer pack with whole tensors and restore real copies on the CPU."""
    from awq.modules.linear.gemm import WQLinear_GEMM
    from awq.quantize.quantizer import AwqQuantizer

    WQLinear_GEMM.from_linear = classmethod(from_linear)
    if not getattr(AwqQuantizer._compute_best_scale, "copies_on_cpu", False):
        AwqQuantizer._compute_best_scale = with_real_copies(AwqQuantizer._compute_best_scale)
