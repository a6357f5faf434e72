"""tasks/ml/genai_builder.py packs int4 words exactly as the genai builder does.

The CPU pin's builder (0.18) packs word-wise already; the CUDA pin's (0.15.2) expands every bit, which
this backport replaces. Both builders' packing means the same bytes, so ours is checked against the
installed one, over the widths and layouts the builder asks for (and a short last word).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.ml.genai_builder import pack_on_row

ROOT = Path(__file__).resolve().parents[2]


def _builders_own():
    import onnxruntime_genai.models  # noqa: F401  (puts the builder's folder on sys.path)

    try:
        from onnxruntime_genai.models.loaders.base import QuantizedModel  # 0.18
    except ImportError:
        from quantized_model import QuantizedModel  # 0.15 (the CUDA pin)
    return QuantizedModel.pack_on_row_for_2_4_8_bits


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("packed_dtype", [torch.int32, torch.uint8])
@pytest.mark.parametrize("transpose", [False, True])
def test_word_wise_packing_gives_the_builders_bytes(bits, packed_dtype, transpose):
    theirs_fn = _builders_own()
    assert theirs_fn is not pack_on_row  # nothing in this process patched it
    # values beyond `bits` too (the builder keeps the low bits), and 37 columns: a short last word
    values = torch.randint(0, 1 << (bits + 1), (24, 37) if not transpose else (37, 24), dtype=torch.int32)
    ours = pack_on_row(None, values, bits, transpose, packed_dtype)
    theirs = theirs_fn(None, values, bits, transpose, packed_dtype)
    assert ours.dtype == theirs.dtype == packed_dtype
    assert torch.equal(ours, theirs)


def test_the_export_runs_the_builder_through_the_wrapper(tmp_path):
    """The wrapper is what the export runs, and editing it makes the export stale: the stage imports
    it, so its source is in the export's fingerprint."""
    from types import SimpleNamespace

    from tasks.engine.fingerprint import scan
    from tasks.stages.export import builder_command

    assert "tasks/ml/genai_builder.py" in scan(ROOT, "tasks.stages.export")[0]
    cfg = SimpleNamespace(accuracy_level=4, int4_lm_head=False, device="cpu", cuda_graph=False)
    (tmp_path / "config.json").write_text("{}")
    command = builder_command(tmp_path, tmp_path / "out", tmp_path / "cache", cfg, split_qkv=False)
    assert command[1:3] == ["-m", "tasks.ml.genai_builder"]
