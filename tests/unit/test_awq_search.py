"""tasks/ml/awq_search.py: the device-resident AWQ search chooses what AutoAWQ's own chooses.

The clip search sums its errors with a batched matrix product instead of an element-wise product:
the same sums in another order, so a group whose candidates tie within rounding may pick another
of them, never a worse one. On a GPU, the whole quantization is compared with AutoAWQ's own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from awq.quantize.quantizer import AwqQuantizer

from tasks.ml.awq_search import ResidentQuantizer


def _quantizer(cls, group_size: int = 128):
    """The search methods need only the grid: no calibration run (AwqQuantizer.__init__ does one)."""
    q = object.__new__(cls)
    q.w_bit, q.group_size, q.zero_point = 4, group_size, True
    return q


def _outlier_case(seed: int = 0):
    """A weight [640 x 512] and inputs [4096 x 512] with what trained layers have: a few input
    channels 20x larger, and weight columns with outliers that clipping should cut."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, 512, generator=g)
    x[:, torch.randperm(512, generator=g)[:8]] *= 20
    w = torch.randn(640, 512, generator=g) * 0.02
    w[torch.rand(w.shape, generator=g) < 0.002] *= 12
    return w, x


def _clipped_output_error(quantizer, w, x, max_val) -> float:
    clipped = torch.clamp(w.view(*max_val.shape[:2], -1), -max_val, max_val).view(w.shape)
    rounded = quantizer.pseudo_quantize_tensor(clipped)[0]
    return float(((x @ rounded.t()) - (x @ w.t())).pow(2).mean())


def test_clip_search_picks_what_autoawq_picks():
    w, x = _outlier_case()
    ours = ResidentQuantizer._compute_best_clip(_quantizer(ResidentQuantizer), w, x)
    theirs = AwqQuantizer._compute_best_clip(_quantizer(AwqQuantizer), w, x)
    assert ours.shape == theirs.shape == (640, 4, 1)
    same = float((ours == theirs).float().mean())
    assert same > 0.99, same  # measured: 1.0
    unclipped = w.view(640, 4, -1).abs().amax(dim=-1, keepdim=True)
    assert (ours < unclipped).float().mean() > 0.2  # the search does clip: it is not a no-op
    q = _quantizer(AwqQuantizer)
    assert _clipped_output_error(q, w, x, ours) <= 1.001 * _clipped_output_error(q, w, x, theirs)


def test_clip_search_over_several_row_batches(monkeypatch):
    """Output channels are searched in batches; the batch size must not change a channel's choice."""
    import tasks.ml.awq_search as awq_search

    w, x = _outlier_case(seed=1)
    whole = ResidentQuantizer._compute_best_clip(_quantizer(ResidentQuantizer), w, x)
    monkeypatch.setattr(awq_search, "CLIP_ROWS", 128)
    batched = ResidentQuantizer._compute_best_clip(_quantizer(ResidentQuantizer), w, x)
    assert torch.equal(whole, batched)


def quantized_logits_error(cls, device: str) -> float:
    """AutoAWQ with quantizer `cls` on `device` (fp16 on CUDA), scaled and clipped, then rounded as the
    packed model would be: its logits' relative error against the float model with outlier channels."""
    import tempfile

    from awq import AutoAWQForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.ml.qa_data import parse_records
    from tasks.ml.synthetic_model import add_outlier_channels, make_synthetic_model

    dtype = torch.float16 if device == "cuda" else torch.float32
    records, _ = parse_records(Path(__file__).resolve().parents[2] / "data" / "data_sample_travel.jsonl")
    texts = [f"{r['prompt']}\n{r['response']}" for r in records][:64]
    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic_model(texts, Path(tmp), "tiny", seed=1234, vocab_size=1024)
        reference = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype).eval()
        add_outlier_channels(reference, seed=0)
        reference.save_pretrained(tmp)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        ids = torch.tensor([tokenizer(" ".join(texts[-4:]))["input_ids"][:128]]).to(device)
        with torch.no_grad():
            expected = reference.to(device)(ids).logits.float()
        model = AutoAWQForCausalLM.from_pretrained(tmp, torch_dtype=dtype, use_cache=False)
        model.quantize(
            tokenizer,
            quant_config={"zero_point": True, "q_group_size": 128, "w_bit": 4, "version": "GEMM"},
            calib_data=texts,
            max_calib_samples=16,
            max_calib_seq_len=128,
            quantizer_cls=cls,
            export_compatible=True,  # scaled and clipped, not packed: a float model to compare
        )
    for layer in model.quantizer.modules:  # the rounding the packed model would have
        for linear in [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]:
            linear.weight.data = model.quantizer.pseudo_quantize_tensor(linear.weight.data)[0]
    with torch.no_grad():
        logits = model.model.to(device)(ids).logits.float()
    return float((logits - expected).norm() / expected.norm())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compares the GPU path: needs CUDA")
def test_resident_quantizer_matches_autoawq_on_the_gpu():
    """The whole fp16 quantization on CUDA, ours against AutoAWQ's own (which is correct on a GPU):
    the same error against the float model, within rounding."""
    ours, theirs = (quantized_logits_error(cls, "cuda") for cls in (ResidentQuantizer, AwqQuantizer))
    assert ours <= 1.05 * theirs, (ours, theirs)
