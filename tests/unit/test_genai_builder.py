"""tasks/ml/genai_builder.py packs and unpacks int4 words exactly as the genai builder does.

The CPU pin's builder (0.18) packs word-wise already; the CUDA pin's (0.15.2) expands every bit, which
the backport replaces. Both builders' packing means the same bytes, so ours is checked against the
installed one, over the widths and layouts the builder asks for (and a short last word); likewise
the AWQ unpacking, whose values are the builder's in another integer type.
On the CPU machine, the whole 0.15.2 builder with these gives a two-layer Phi-3.5 shape's model.onnx
and model.onnx.data byte for byte (BENCHMARKS.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.ml.genai_builder import pack_on_row, unpack_awq_qweight, unpack_awq_qzeros

ROOT = Path(__file__).resolve().parents[2]


def _builder_class(name: str):
    """The installed builder's QuantizedModel or AWQModel (0.18 on the CPU, 0.15 on a CUDA machine)."""
    import onnxruntime_genai.models  # noqa: F401  (puts the builder's folder on sys.path)

    try:
        from onnxruntime_genai.models.loaders import awq, base  # 0.18
    except ImportError:
        import quantized_model  # 0.15 (the CUDA pin)

        return getattr(quantized_model, name)
    return getattr(base if name == "QuantizedModel" else awq, name)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("packed_dtype", [torch.int32, torch.uint8])
@pytest.mark.parametrize("transpose", [False, True])
def test_word_wise_packing_gives_the_builders_bytes(bits, packed_dtype, transpose):
    theirs_fn = _builder_class("QuantizedModel").pack_on_row_for_2_4_8_bits
    assert theirs_fn is not pack_on_row  # nothing in this process patched it
    # values beyond `bits` too (the builder keeps the low bits), and 37 columns: a short last word
    values = torch.randint(0, 1 << (bits + 1), (24, 37) if not transpose else (37, 24), dtype=torch.int32)
    ours = pack_on_row(None, values, bits, transpose, packed_dtype)
    theirs = theirs_fn(None, values, bits, transpose, packed_dtype)
    assert ours.dtype == theirs.dtype == packed_dtype
    assert torch.equal(ours, theirs)


def test_awq_unpacking_gives_the_builders_values():
    """AWQ's words as the builder unpacks them (nibbles, then AWQ's column order undone), as int32."""
    from types import SimpleNamespace

    from tasks.ml.awq_pack import pack_int4

    k, n, group = 256, 96, 128
    nibbles = torch.randint(0, 16, (k, n), dtype=torch.int32)
    zeros = torch.randint(0, 16, (k // group, n), dtype=torch.int32)

    def module():
        return SimpleNamespace(
            qweight=pack_int4(nibbles), qzeros=pack_int4(zeros), bits=4, group_size=group, in_features=k, out_features=n
        )

    ours, theirs = module(), module()
    unpack_awq_qweight(None, ours)
    unpack_awq_qzeros(None, ours)
    builder = object.__new__(_builder_class("AWQModel"))  # its methods only: no checkpoint to read
    assert type(builder).unpack_qweight is not unpack_awq_qweight  # the builder's own, unpatched
    builder.unpack_qweight(theirs)
    builder.unpack_qzeros(theirs)
    assert torch.equal(ours.qweight, nibbles) and torch.equal(ours.qzeros, zeros)
    assert torch.equal(ours.qweight.long(), theirs.qweight.long())
    assert torch.equal(ours.qzeros.long(), theirs.qzeros.long())


def test_the_export_runs_the_builder_through_the_wrapper(tmp_path):
    """The wrapper is what the export runs, and editing it makes the export stale: the stage imports
    it, so its source is in the export's fingerprint."""
    from types import SimpleNamespace

    from tasks.engine.fingerprint import scan
    from tasks.stages.export import builder_args

    assert "tasks/ml/genai_builder.py" in scan(ROOT, "tasks.stages.export")[0]
    cfg = SimpleNamespace(accuracy_level=4, int4_lm_head=False, device="cpu", cuda_graph=False)
    (tmp_path / "config.json").write_text("{}")
    args = builder_args(tmp_path, tmp_path / "out", tmp_path / "cache", cfg, split_qkv=False)
    assert args[:4] == ["-i", str(tmp_path), "-o", str(tmp_path / "out")]


def test_the_builder_runs_in_this_process_and_puts_it_back_as_it_was(tmp_path, monkeypatch):
    """The builder runs inside the export's process: a refusal of its arguments is an error naming
    them, and the process's folder, arguments and GIT_DIR are as before either way."""
    import os
    import sys

    from tasks.ml import genai_builder

    monkeypatch.delenv("GIT_DIR", raising=False)
    before = sys.argv[:], os.getcwd()
    with pytest.raises(RuntimeError, match=r"refused its arguments \['--no-such-option'\]"):
        genai_builder.run(["--no-such-option"], tmp_path)
    assert (sys.argv, os.getcwd(), os.environ.get("GIT_DIR")) == (*before, None)
