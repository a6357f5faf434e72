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
    assert run.returncode != 0
    assert run.failed == ["data"] and run.ran == []
    assert f"{data}:290: missing key 'response'" in run.output
    assert "log: " in run.output and "Traceback" not in run.output
    assert _records(built_copy) == before  # every earlier artifact record is untouched
    assert (built_copy / "models/tiny/onnx-ao/model/model.onnx").is_file()


def test_misspelt_params_key_names_it_and_runs_nothing(built_copy):
    edit_params(built_copy, "max_steps: 100", "max_step: 100")
    run = doit(built_copy)
    assert run.returncode != 0 and run.ran == []
    assert "finetune.max_step: unknown key (did you mean 'max_steps'?)" in run.output


def test_cuda_requested_without_cuda_is_a_clear_error(built_copy):
    edit_params(built_copy, "device: auto        # auto | cpu | cuda", "device: cuda")
    run = doit(built_copy)
    assert run.returncode != 0 and run.failed == ["quantize"] and run.ran == []
    assert "params.yaml: quantize.device: cuda, but torch" in run.output
    assert "sees no CUDA device" in run.output
