"""Training and serving see the same token ids: one record through Olive's data path as finetune
configures it (tasks/stages/finetune.py olive_config) against the ids smoke, `doit ask` and
evaluate give the model, for the lab's Phi-3 template and SmolLM2's ChatML with its real tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tasks.ml.chat_template import example_ids, prompt_ids, render
from tasks.ml.genai import prompt_tokenizer
from tasks.params import LAB_TEMPLATE

ROOT = Path(__file__).resolve().parents[2]
RECORD = {"prompt": "what is the best thing to see in chicago", "response": "The Art Institute, then Millennium Park."}
CHATML = yaml.safe_load((ROOT / "params.yaml").read_text())["template"]
JSON_TEMPLATE = '{"user": "{prompt}", "assistant": "{response}"}'


@pytest.fixture(scope="module")
def phi3_tokenizer(tmp_path_factory) -> Path:
    """The synthetic Phi-3's tokenizer (BPE trained on the lab's data, Phi-3's chat markers)."""
    from tasks.ml.synthetic_model import save_tokenizer, train_tokenizer

    folder = tmp_path_factory.mktemp("phi3")
    texts = [json.loads(line)["prompt"] for line in (ROOT / "data/data_sample_travel.jsonl").open(encoding="utf-8-sig")]
    save_tokenizer(train_tokenizer(texts * 4, 1024), folder)
    (folder / "config.json").write_text('{"model_type": "phi3"}')  # finetune reads it (remote code?)
    return folder


@pytest.fixture(scope="module")
def smollm2_tokenizer(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct's own tokenizer, from the GGUF file the default build reads."""
    from transformers import AutoTokenizer

    from tasks.ml.gguf import locate

    gguf = locate(yaml.safe_load((ROOT / "params.yaml").read_text())["base"]["gguf"], ROOT)
    folder = tmp_path_factory.mktemp("smollm2")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    return folder


def olive_training_ids(tokenizer_dir: Path, template: str, tmp_path: Path, monkeypatch) -> list[int]:
    """The ids Olive's LoRA pass trains on for RECORD: finetune's own data config, resolved by Olive's
    run config (it fills in the model) and pre-processed by Olive, one block as long as the example."""
    from olive.data.config import DataConfig
    from olive.workflows.run.config import RunConfig
    from transformers import AutoTokenizer

    from tasks.params import Params
    from tasks.stages.finetune import olive_config

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps(RECORD) + "\n")
    length = len(example_ids(AutoTokenizer.from_pretrained(tokenizer_dir), template, **RECORD)[0])
    params = Params.model_validate({"template": template, "finetune": {"max_seq_len": length}})
    config = olive_config(params, tokenizer_dir, train, tmp_path, "float32", ["o_proj"])
    data = RunConfig.model_validate(config).data_configs[0]
    container = DataConfig.model_validate(data.model_dump()).to_data_container()
    dataset = container.pre_process(container.load_dataset())
    assert len(dataset) == 1
    return dataset[0][0]["input_ids"].tolist()


@pytest.mark.parametrize(
    ("tokenizer", "template"),
    [("phi3_tokenizer", LAB_TEMPLATE), ("smollm2_tokenizer", CHATML), ("phi3_tokenizer", JSON_TEMPLATE)],
)
def test_training_and_serving_agree_on_every_token(tokenizer, template, request, tmp_path, monkeypatch):
    folder = request.getfixturevalue(tokenizer)
    trained = olive_training_ids(folder, template, tmp_path, monkeypatch)
    served = prompt_ids(prompt_tokenizer(folder), template, RECORD["prompt"])  # smoke, ask
    assert trained[: len(served)] == served, (trained[:12], served[:12])
    evaluated, n_prompt = example_ids(prompt_tokenizer(folder), template, **RECORD)  # evaluate
    assert evaluated == trained and n_prompt == len(served)
    answer = prompt_tokenizer(folder).decode(trained[len(served) :], skip_special_tokens=False)
    assert answer == render(template, "", RECORD["response"])[len(render(template, "")) :]


def test_a_json_shaped_template_renders_its_braces_as_text():
    text = render(JSON_TEMPLATE, 'the "loop"', "{x}")
    assert text == '{"user": "the "loop"", "assistant": "{x}"}'
    assert render(JSON_TEMPLATE, "q") == '{"user": "q", "assistant": "'
