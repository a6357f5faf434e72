"""LongRoPE without control flow (tasks/ml/longrope.py), checked token for token against transformers
below, across and above `original_max_position_embeddings` (4096): the rewrite is what lets CUDA
graphs capture a Phi-3.5 model, so it must choose the rotary cache exactly when transformers does.

The model is the synthetic `tiny-longrope` shape in fp32 on the CPU (the builder's float path), where
transformers and onnxruntime agree to ~1e-6 and greedy tokens are a sharp test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.ml.longrope import select_without_if
from tasks.ml.synthetic_model import make_synthetic_model

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    import onnx

    where = tmp_path_factory.mktemp("longrope")
    texts = [json.loads(line)["response"] for line in (ROOT / "data/data_sample_travel.jsonl").open()]
    make_synthetic_model(texts, where / "hf", "tiny-longrope", seed=3, vocab_size=512)
    builder = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-p", "fp32", "-e", "cpu"]
    subprocess.run(
        [*builder, "-i", where / "hf", "-o", where / "if", "-c", where / "cache"], check=True, capture_output=True
    )
    shutil.copytree(where / "if", where / "gather")
    model = onnx.load(where / "gather/model.onnx", load_external_data=False)
    assert select_without_if(model)
    onnx.save(model, where / "gather/model.onnx")
    return {"hf": where / "hf", "if": where / "if", "gather": where / "gather"}


def _genai(folder: Path, ids: list[int]) -> tuple[list[int], np.ndarray]:
    """Greedy tokens, and the logits of the prompt's last position."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + NEW_TOKENS)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    first = np.array(generator.get_output("logits"))[0, -1]
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens, first


def test_the_rewritten_graph_has_no_control_flow_and_the_same_logits(models):
    import onnx

    ops = {node.op_type for node in onnx.load(models["gather"] / "model.onnx", load_external_data=False).graph.node}
    assert "If" not in ops and "Gather" in ops
    ids = list(range(10, 400))
    assert np.array_equal(_genai(models["if"], ids)[1], _genai(models["gather"], ids)[1])


# 4000: short cache throughout; 4090: the sequence passes 4096 while decoding (the prompt ran short,
# the new tokens long, as in transformers); 4200: long from the prompt on.
@pytest.mark.parametrize("length", [4000, 4090, 4200])
def test_greedy_tokens_match_transformers_below_across_and_above_the_original_context(models, length):
    ids = _prompt(length)
    expected = _transformers(models["hf"], ids, NEW_TOKENS)
    tokens, _ = _genai(models["gather"], ids)
    assert tokens == expected
    assert len(set(expected)) > 1  # not a degenerate repetition that any cache would give


@pytest.mark.parametrize("length", [4096, 4097])
def test_the_cache_switches_at_the_same_length_as_in_transformers(models, length):
    """The last short length and the first long one: the prompt's last logits, as transformers has them."""
    ids = _prompt(length)
    _, first = _genai(models["gather"], ids)
    assert np.abs(first - _transformers(models["hf"], ids, 0)).max() < 1e-4


def _prompt(length: int) -> list[int]:
    return np.random.default_rng(length).integers(10, 500, length).tolist()


def _transformers(folder: Path, ids: list[int], new_tokens: int):
    """Greedy new tokens, or (new_tokens 0) the logits of the prompt's last position."""
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        if not new_tokens:
            return hf(torch.tensor([ids])).logits[0, -1].numpy()
        out = hf.generate(torch.tensor([ids]), max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    return out[0, len(ids) :].tolist()
