"""`doit ask`: the lab's app on the built model (tiny here; tests/e2e/test_default_model.py asks the
real one). The streamed answer is the greedy answer smoke recorded for the same question."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import doit, make_project, streamed_answers

pytestmark = pytest.mark.slow
QUESTION = "what is the best thing to see in chicago"  # smoke's prompt in params/tiny.yaml


def test_ask_streams_the_answer_smoke_recorded_with_the_adapter_and_without(built_copy):
    recorded = json.loads((built_copy / "models/tiny/smoke/travel/answers.json").read_text())["answers"][0]
    assert recorded["prompt"] == QUESTION
    run = doit(built_copy, "ask", QUESTION)
    assert run.returncode == 0, run.output
    assert streamed_answers(run.output) == {"adapter travel": (recorded["answer"], recorded["new_tokens"])}
    run = doit(built_copy, "ask", "--all", QUESTION)
    assert run.returncode == 0, run.output
    assert run.output.count("loaded in") == 1  # one model for both answers
    said = streamed_answers(run.output)
    assert list(said) == ["adapter travel", "no adapter"]
    assert said["adapter travel"][0] == recorded["answer"]
    # The random model's answer holds an invalid UTF-8 sequence: og.Tokenizer.decode (smoke) ends
    # there with U+FFFD, the stream decoder goes on. (test_default_model compares real text whole.)
    assert said["no adapter"][0].startswith(recorded["answer_without_adapter"].rstrip("\ufffd"))
    assert said["adapter travel"] != said["no adapter"]
    run = doit(built_copy, "ask", "--no-adapter", "--max-tokens", "3", QUESTION)
    assert run.returncode == 0, run.output
    assert [count for _, count in streamed_answers(run.output).values()] == [3]


def test_ask_names_what_is_wrong(built_copy, tmp_path):
    run = doit(built_copy, "ask", "--adapter", "french", QUESTION)
    assert run.returncode == 1
    assert "no adapter 'french' in" in run.output and "adapters: travel" in run.output
    for args, problem in [
        ([], "a question is needed"),
        (["--all", "--adapter", "travel", QUESTION], "--adapter, --no-adapter and --all exclude each other"),
        (["--device", "tpu", QUESTION], "--device tpu: use auto, cpu or cuda"),
    ]:
        run = doit(built_copy, "ask", *args)
        assert run.returncode == 3, args
        assert f"error: {problem}; usage: doit ask" in run.output
    fresh = make_project(tmp_path / "fresh")
    run = doit(fresh, "ask", QUESTION)
    assert run.returncode == 1
    assert "the model is not built yet" in run.output and "run `doit smoke` or `doit`" in run.output
    assert not Path(fresh / "models").exists()  # asking builds nothing
