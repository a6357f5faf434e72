"""The evaluate stage's figures (real runs on the tiny model) and the report built from them."""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

import pytest

from tests.conftest import doit

pytestmark = pytest.mark.slow


def _metrics(project: Path) -> dict:
    return json.loads((project / "models/metrics/tiny/travel/evaluate.json").read_text())


def test_torch_and_onnx_agree_and_the_adapter_helps(built):
    m = _metrics(built)
    evals = (built / "data/prepared/tiny/travel/eval.jsonl").read_text().splitlines()
    assert m["examples"] == len(evals) > 0
    # The untrained tiny model predicts close to uniformly over its vocabulary, so its perplexity is
    # near the vocabulary's size (a loss summed instead of averaged, in bits, or over the prompt's
    # tokens too, lands far from it).
    vocab = json.loads((built / "models/tiny/base/config.json").read_text())["vocab_size"]
    assert 0.8 * vocab < m["perplexity_base"] < 1.25 * vocab
    # Each variant's loss is the mean of its per-example losses (the eval_loss plot's columns).
    rows = list(csv.DictReader((built / "models/plots/tiny/travel/eval_loss.csv").open()))
    for variant in ("base", "rtn", "awq", "awq_adapter", "onnx_adapter"):
        mean = sum(float(r[variant]) for r in rows) / len(rows)
        assert math.isclose(m[f"loss_{variant}"], mean, rel_tol=1e-4), variant
    # Same weights, same adapter, two runtimes: int4 MatMulNBits (int8 compute) vs exact fp32 dequantization.
    assert math.isclose(m["perplexity_onnx_adapter"], m["perplexity_awq_adapter"], rel_tol=0.01)
    # 100 LoRA steps on the train split lower the loss on the held-out split (tiny model: ~0.3 nats).
    assert m["loss_awq_adapter"] < m["loss_awq"] - 0.1
    # AWQ w4 g128 barely moves the loss of the tiny model (measured 0.005 nats with the tiny build's
    # 32 calibration blocks and no clip search; 0.0013 with AutoAWQ's defaults), and on its outlier
    # channels costs far less than rounding to nearest on the same grid (0.020 nats; AutoAWQ's own
    # CPU path, before tasks/ml/awq_pack.py's fix, cost more than rounding).
    assert abs(m["loss_awq"] - m["loss_base"]) < 0.05
    assert m["loss_awq"] - m["loss_base"] < 0.5 * (m["loss_rtn"] - m["loss_base"])
    assert m["answers_first_8_tokens_match"] in {i / len(evals) for i in range(len(evals) + 1)}
    assert m["tokens_per_second_adapter"] > 0 and m["ttft_ms_adapter"] > 0 and m["tokens_per_second_no_adapter"] > 0


def test_an_answer_matches_only_when_its_first_tokens_are_the_reference(built):
    """The share of answers whose first N greedy tokens are the reference's is 0 on the tiny model
    and on the default one (their wording is not the data set's), so its value in metrics.json
    cannot tell a right count from one that is always 0. References made from the model's own
    greedy answers (adapter on) can: each must match, and each with one token changed must not."""
    from tasks.ml.genai import generate
    from tasks.pipeline import project
    from tasks.stages.evaluate import answer_matches, onnx_session

    params, paths = project(built)
    model, adapters, _ = onnx_session(params.for_adapter("travel"), paths.for_adapter("travel"))
    name, n = "travel", params.evaluate.match_tokens
    prompts = [{"prompt": p} for p in ([1, 2, 3], [5, 8, 13, 21], [34, 55])]
    own = [{**p, "answer": generate(model, None, p["prompt"], n, adapters, name)[0]} for p in prompts]
    assert all(len(ex["answer"]) == n for ex in own)  # no end-of-text within n tokens: a full comparison
    changed = [
        {**ex, "answer": [*ex["answer"][:i], ex["answer"][i] + 1, *ex["answer"][i + 1 :]]} for i, ex in enumerate(own)
    ]
    assert answer_matches(model, adapters, name, own, n) == [True, True, True]
    assert answer_matches(model, adapters, name, changed, n) == [False, False, False]  # 1st, 2nd, 3rd token changed
    assert answer_matches(model, adapters, name, own + [{**own[0], "answer": []}], n)[-1] is False  # no reference
    # Answers are compared with the adapter on: the base model's own answers (they differ) do not match.
    plain = [{**p, "answer": generate(model, None, p["prompt"], n)[0]} for p in prompts]
    assert [a["answer"] != b["answer"] for a, b in zip(own, plain, strict=False)] == [True, True, True]
    assert answer_matches(model, adapters, name, plain, n) == [False, False, False]


def test_sizes_are_the_artifacts_on_disk(built):
    m = _metrics(built)
    for key, folder in [("base", "base"), ("awq", "awq"), ("adapter", "ft/travel"), ("onnx", "onnx-ao/model")]:
        on_disk = sum(p.stat().st_size for p in (built / "models/tiny" / folder).rglob("*") if p.is_file())
        assert m[f"bytes_{key}"] == on_disk, key
    assert m["compression_awq"] == round(m["bytes_base"] / m["bytes_awq"], 3) > 1


def test_plots_hold_the_training_and_eval_curves(built):
    plots = built / "models/plots/tiny/travel"
    train = list(csv.DictReader((plots / "train_loss.csv").open()))
    assert [int(r["step"]) for r in train] == list(range(1, 101))
    evals = list(csv.DictReader((plots / "eval_loss.csv").open()))
    assert len(evals) == _metrics(built)["examples"]
    mean = sum(float(r["onnx_adapter"]) for r in evals) / len(evals)
    assert math.isclose(mean, _metrics(built)["loss_onnx_adapter"], rel_tol=1e-3)


def test_report_renders_with_real_plots(built_copy):
    import matplotlib.image

    run = doit(built_copy, "report")
    assert run.returncode == 0, run.output
    report = built_copy / "models/tiny/report"
    page = (report / "index.html").read_text()
    assert "ONNX + adapter" in page and "what is the best thing to see in chicago" in page
    assert page.count('src="data:image/png;base64,') == 4  # self-contained
    held_out = json.loads((built_copy / "models/tiny/eval/travel/answers.json").read_text())["answers"]
    evals = [
        json.loads(line) for line in (built_copy / "data/prepared/tiny/travel/eval.jsonl").read_text().splitlines()
    ]
    assert [a["prompt"] for a in held_out] == [r["prompt"] for r in evals[:3]]  # the held-out questions
    assert "Held-out questions" in page and html.escape(held_out[0]["prompt"]) in page
    assert "Adapter travel" in page
    for name in ("training_loss", "perplexity", "sizes", "decode_speed"):
        png = report / f"{name}_travel.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        pixels = matplotlib.image.imread(png)[..., :3]
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400, name
        # Axes, ticks and labels are black or grey; the data (bars, lines) is drawn in colour. An
        # empty chart has no coloured pixels; the data must cover a part of the width.
        coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 0.3
        columns = coloured.any(axis=0).nonzero()[0]
        assert coloured.mean() > 0.005 and columns.size, f"{name} shows no data"
        assert columns.max() - columns.min() > 0.3 * pixels.shape[1], f"{name}: its data spans too little"
