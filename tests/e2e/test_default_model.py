"""The product's real path: the default params build SmolLM2-135M-Instruct, a real pretrained model
shipped in a PyPI wheel, offline through every stage, and the adapter makes it answer travel questions.
(Every other test builds the tiny random model: params/tiny.yaml.)"""

from __future__ import annotations

import json

import pytest

from tasks.pipeline import default_tasks
from tests.conftest import doit, edit_params, make_project, streamed_answers

pytestmark = pytest.mark.slow


def test_the_default_model_is_real_and_the_adapter_teaches_it_travel(tmp_path):
    project = make_project(tmp_path / "project", params="params.yaml")
    edit_params(project, "max_examples: 0", "max_examples: 8")  # 8 eval records compare the models well enough
    run = doit(project, timeout=1200)
    assert run.returncode == 0, run.output
    assert run.ran == default_tasks(), run.output
    models = project / "models/smollm2"
    answer = json.loads((models / "smoke/travel/answers.json").read_text())["answers"][0]
    assert "chicago" in answer["answer"].lower(), answer  # English about the question, not noise
    run = doit(project, "ask", "--all", answer["prompt"])  # the lab's app: streamed, adapter on, then off
    assert run.returncode == 0, run.output
    said = streamed_answers(run.output)
    assert said["adapter travel"] == (answer["answer"], answer["new_tokens"])
    assert said["no adapter"][0] == answer["answer_without_adapter"]
    held_out = json.loads((models / "eval/travel/answers.json").read_text())["answers"]
    assert len(held_out) == 3 and all(a["answer"] != a["answer_without_adapter"] for a in held_out)
    m = json.loads((models / "eval/travel/metrics.json").read_text())
    # Measured on the whole eval split (2 cores): base 3.79 nats, round-to-nearest 3.87, AWQ 3.77,
    # AWQ + adapter 2.01, ONNX + adapter 2.01.
    assert m["loss_awq"] < m["loss_rtn"]  # AWQ beats plain rounding on a real model
    assert m["loss_awq_adapter"] < m["loss_base"] - 0.5  # finetuning bought something real
    assert abs(m["loss_onnx_adapter"] - m["loss_awq_adapter"]) < 0.05  # the shipped model is the trained one
