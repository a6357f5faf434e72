"""onnxruntime-genai's model builder, run in the export's own process (`run(ARGS)`, the builder's own
command-line arguments), with its AWQ int4 words packed and unpacked whole instead of bit by bit.

The builder of onnxruntime-genai-cuda 0.15.2 (the CUDA pin) repacks an AWQ checkpoint for MatMulNBits
on the CPU. It packed by expanding every value into one int64 per bit, shifting and summing them:
most of the 112 s the export spent in the builder on the H200 for Phi-3.5-mini (BENCHMARKS.md).
Later builders (0.18, the CPU pin) pack a word's values one shift at a time: backported here. It
unpacks AWQ's words into int64 nibbles and then undoes AWQ's nibble order with a gather over every
column: here one shift per nibble into its place (tasks/ml/awq_pack.py's unpack_int4), int32.
Both live in 0.15's top-level `quantized_model` module; the bytes are the same
(tests/unit/test_genai_builder.py), and a builder of the later layout is run as it is.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
from pathlib import Path
from unittest import mock


def pack_on_row(self, tensor, bits: int, transpose: bool, packed_dtype=None):
    """The builder's pack_on_row_for_2_4_8_bits: each row's values (their low `bits` bits), in order,
    into words of `packed_dtype` (int32 by default), the first value in the lowest bits; a short last
    word is zero-padded."""
    import torch

    packed_dtype = packed_dtype or torch.int32
    rows = tensor.T if transpose else tensor
    per_word = torch.iinfo(packed_dtype).bits // bits
    words = torch.zeros((rows.shape[0], -(-rows.shape[1] // per_word)), dtype=packed_dtype, device=rows.device)
    mask = (1 << bits) - 1
    for slot in range(per_word):
        values = rows[:, slot::per_word].to(packed_dtype) & mask
        words[:, : values.shape[1]] |= values << (slot * bits)
    return words.T if transpose else words


def unpack_awq_qweight(self, module) -> None:
    """AWQModel.unpack_qweight: [K, N / 8] AWQ words -> [K, N] nibbles in column order."""
    from tasks.ml.awq_pack import unpack_int4

    module.qweight = unpack_int4(module.qweight)


def unpack_awq_qzeros(self, module) -> None:
    """AWQModel.unpack_qzeros: [K / group, N / 8] AWQ words -> [K / group, N] zero points in column order."""
    from tasks.ml.awq_pack import unpack_int4

    if module.qzeros is not None:
        module.qzeros = unpack_int4(module.qzeros)


def patch_old_builder() -> bool:
    """Give a 0.15-layout builder the word-wise packing and unpacking; False where the builder is of
    the later layout."""
    import onnxruntime_genai.models  # noqa: F401  (puts the builder's folder on sys.path)

    try:
        import quantized_model  # the 0.15 layout; 0.18 moved it to loaders/ and packs word-wise
    except ImportError:
        return False
    quantized_model.QuantizedModel.pack_on_row_for_2_4_8_bits = pack_on_row
    quantized_model.AWQModel.unpack_qweight = unpack_awq_qweight
    quantized_model.AWQModel.unpack_qzeros = unpack_awq_qzeros
    return True


def run(args: list[str], cwd: Path) -> None:
    """The builder's command line `args`, run here from `cwd` (its scratch files go there): no
    process of its own to start and import torch in again (5 s of a tiny export on 2 cores). The
    working folder, arguments and environment are put back after it.

    The builder stamps model.onnx with `git rev-parse HEAD` run five folders above its own file:
    inside this checkout when .venv is in it, so every commit changed the model's bytes. With no
    repository to find (GIT_DIR) it takes the wheel's own commit."""
    patch_old_builder()
    argv = mock.patch.object(sys, "argv", ["builder", *args])
    environment = mock.patch.dict(os.environ, GIT_DIR=str(cwd / "no-repository"))
    with contextlib.chdir(cwd), argv, environment:
        try:
            runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)
        except SystemExit as exc:  # its argument parser's refusal: an error of ours, not the user's
            if exc.code:
                raise RuntimeError(f"the genai builder refused its arguments {args} (exit {exc.code})") from exc
