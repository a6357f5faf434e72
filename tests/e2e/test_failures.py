"""Bad input stops the build at the stage that reads it, says why, and leaves built artifacts alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import doit, edit_params

pytestmark = pytest.mark.slow


def _records(project: Path) -> dict[str, str]:
    return {str(p.relative_to(project)): p.read_text() for p in project.rglob("*.dvc") if p.is_file()}


def test_bad_data_line_fails_data_and_nothing_after_it(built_copy):
    before = _records(built_copy)
    data = built_copy / "data" / "data_sample_travel.jsonl"
    data.write_bytes(data.read_bytes() + b'\r\n{"prompt": "Rome?", "respons": "Walk."}\r\n')
    run = doit(built_copy)
    assert run.returncode == 1
    assert run.failed == ["data:travel"] and run.ran == []
    assert f"{data}:290: missing key 'response'" in run.output
    assert "log: " in run.output and "Traceback" not in run.output
    assert _records(built_copy) == before  # every earlier artifact record is untouched
    assert (built_copy / "models/tiny/onnx-ao/model/model.onnx").is_file()


def test_misspelt_params_key_names_it_and_runs_nothing(built_copy):
    edit_params(built_copy, "max_steps: 100", "max_step: 100")
    run = doit(built_copy)
    assert run.returncode == 1 and run.ran == []
    assert "finetune.max_step: unknown key (did you mean 'max_steps'?)" in run.output


def test_cuda_requested_without_cuda_is_a_clear_error(built_copy):
    edit_params(built_copy, "device: auto        # auto | cpu | cuda", "device: cuda")
    run = doit(built_copy)
    assert run.returncode == 1 and run.failed == ["quantize"] and run.ran == []
    assert "params.yaml: quantize.device: cuda, but torch" in run.output
    assert "sees no CUDA device" in run.output


def test_data_path_outside_the_project_is_refused(built_copy):
    edit_params(built_copy, "data: data/data_sample_travel.jsonl", "data: ../../../etc/passwd")
    run = doit(built_copy)
    assert run.returncode == 1 and run.ran == []
    assert "adapters.travel.data: '../../../etc/passwd' is outside the project" in run.output


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "base.path: {folder} is not a folder"),
        ({"architectures": ["BertModel"]}, "has no *ForCausalLM; not a causal LM"),
        (
            {"architectures": ["MyForCausalLM"], "auto_map": {"AutoModelForCausalLM": "m.MyForCausalLM"}},
            "the model ships its own code; set base.trust_remote_code: true to run it",
        ),
    ],
)
def test_bad_local_base_folder(built_copy, tmp_path, config, message):
    import json

    folder = tmp_path / "checkpoint"
    if config is not None:
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
    edit_params(built_copy, "source: synthetic ", f"source: local\n  path: {folder}\n ")
    before = _records(built_copy)
    run = doit(built_copy)
    assert run.returncode == 1 and run.failed == ["base"] and run.ran == []
    assert message.format(folder=folder) in run.output
    assert _records(built_copy) == before


def test_a_gguf_file_that_is_not_installed_is_named(built_copy):
    edit_params(built_copy, "source: synthetic ", "source: gguf\n  gguf: package:no-such-wheel/m.gguf\n ")
    before = _records(built_copy)
    run = doit(built_copy)
    assert run.returncode == 1 and run.failed == ["base"] and run.ran == []
    assert "base.gguf: package:no-such-wheel/m.gguf: the package no-such-wheel is not installed" in run.output
    assert _records(built_copy) == before


def test_group_size_must_divide_the_model(built_copy):
    edit_params(built_copy, "q_group_size: 128", "q_group_size: 512")
    run = doit(built_copy)
    assert run.failed == ["quantize"]
    assert "quantize.q_group_size: 512 does not divide the base model's hidden_size (256)" in run.output


def test_disk_full_keeps_the_previous_artifact(built_copy):
    """Writes past 40 kB fail (RLIMIT_FSIZE, as on a full disk) while data writes its splits."""
    import resource

    prepared = built_copy / "data/prepared/tiny/travel"
    before = {p.name: p.read_bytes() for p in prepared.iterdir()}
    edit_params(built_copy, "seed: 42", "seed: 43")
    run = doit(built_copy, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000)))
    assert run.returncode == 1 and run.failed == ["data:travel"]
    assert "disk full while writing" in run.output and "File too large" in run.output
    assert "data/prepared/tiny/travel is untouched" in run.output
    assert {p.name: p.read_bytes() for p in prepared.iterdir()} == before
    assert not list(prepared.parent.glob(".tmp-*"))


def test_no_secret_reaches_logs_records_metrics_or_params(built_copy):
    secret = "s3cr3t-0123456789"
    edit_params(built_copy, "max_new_tokens: 64", "max_new_tokens: 8")
    run = doit(built_copy, env={"AZURE_CLIENT_SECRET": secret, "HF_TOKEN": secret})
    assert run.returncode == 0 and run.ran == ["smoke:travel"], run.output
    records = [
        *built_copy.rglob("*.dvc"),
        *(built_copy / "models/metrics").rglob("*"),
        *(built_copy / ".dvc/cache/runs").rglob("*"),
    ]
    for path in [*records, *(built_copy / "logs").iterdir(), built_copy / "params.yaml"]:
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


def test_a_diverging_run_through_the_real_trainer_fails_finetune(built_copy):
    """A learning rate that overflows the weights: every later gradient is non-finite, each such
    step is skipped and counted, and past 10 % of the steps the stage fails; the adapter is kept."""
    before = (built_copy / "models/tiny/ft/travel.dvc").read_text()
    edit_params(built_copy, "learning_rate: 0.0002", "learning_rate: 1.0e+30")
    edit_params(built_copy, "max_steps: 100", "max_steps: 20")
    run = doit(built_copy)
    assert run.returncode == 1 and run.failed == ["finetune:travel"] and run.ran == [], run.output
    assert "training diverged" in run.output
    assert (built_copy / "models/tiny/ft/travel.dvc").read_text() == before


def test_disk_full_in_finetune_keeps_the_previous_adapter(built_copy):
    """The same full disk (RLIMIT_FSIZE) while finetune writes (Olive's datasets cache comes first,
    an error Olive would log and return from: the stage names it as a full disk all the same)."""
    import resource

    before = (built_copy / "models/tiny/ft/travel.dvc").read_text()
    edit_params(built_copy, "max_steps: 100", "max_steps: 10")
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))  # noqa: E731
    run = doit(built_copy, preexec_fn=limit)
    assert run.returncode == 1 and run.failed == ["finetune:travel"], run.output
    assert "disk full while writing" in run.output and "is untouched" in run.output, run.output
    assert (built_copy / "models/tiny/ft/travel.dvc").read_text() == before
    assert (built_copy / "models/tiny/ft/travel/adapter_model.safetensors").is_file()
    assert not list((built_copy / "models/tiny/ft").glob(".tmp-*"))
