"""The commands users of doit and DVC reach for on day one, on a built tiny project: `doit status`,
`doit dag`, `doit clean`, and JSON from `doit info` and `doit versions`."""

from __future__ import annotations

import json

import pytest

from tasks.pipeline import plan, read_again
from tests.conftest import doit, edit_params

pytestmark = pytest.mark.slow


def test_status_says_each_step_is_up_to_date_or_why_not_in_build_order(built_copy):
    edit_params(built_copy, "max_calib_samples: 32", "max_calib_samples: 16")
    shown = doit(built_copy, "status")
    lines = [line for line in shown.output.splitlines() if line.strip()]
    assert [line.split()[1] for line in lines[:8]] == [
        "data:travel", "base", "quantize", "finetune:travel", "export", "adapter:travel", "smoke:travel",
        "evaluate:travel",
    ]  # fmt: skip
    assert "quantize           stale: changed: params.quantize.max_calib_samples" in shown.output
    assert "finetune:travel    stale: after quantize" in shown.output
    assert "base               up to date" in shown.output
    rows = json.loads(doit(built_copy, "status", "--json").output)  # nothing but JSON on stdout
    by_step = {row["step"]: row for row in rows}
    assert by_step["data:travel"]["state"] == "up to date" and by_step["smoke:travel"]["state"] == "stale"
    assert by_step["register"] == {
        "step": "register", "state": "cannot be built", "why": by_step["register"]["why"], "in_default_build": False,
    } and "azure" in by_step["register"]["why"]  # fmt: skip
    info = json.loads(doit(built_copy, "info", "--json", "quantize").output)
    assert info == [{"step": "quantize", "state": "stale", "why": "changed: params.quantize.max_calib_samples",
                     "caveats": []}]  # fmt: skip


def test_dag_shows_every_edge_as_text_mermaid_and_dot(built_copy):
    read_again()
    found, _ = plan(built_copy)
    edges = {(up, step) for step in found.stages for up in found.upstream(step)}
    lines = [line.split(" <- ") for line in doit(built_copy, "dag").output.splitlines()]
    assert [step for step, _ in lines] == list(found.stages)
    assert {(up, step) for step, ups in lines for up in ups.split(", ") if up != "(nothing)"} == edges
    mermaid = doit(built_copy, "dag", "--mermaid").output
    assert mermaid.startswith("graph LR") and '  quantize["quantize"] --> export["export"]' in mermaid
    dot = doit(built_copy, "dag", "--dot").output
    assert dot.count(" -> ") == len(edges) and '"finetune:travel" -> "adapter:travel";' in dot


def test_clean_removes_outputs_the_cache_keeps_and_doit_restores_them(built_copy):
    cleaned = doit(built_copy, "clean", "export", "smoke")
    assert cleaned.returncode == 0, cleaned.output
    assert "removed models/tiny/onnx-ao/model" in cleaned.output and "dvc gc" in cleaned.output
    assert not (built_copy / "models/tiny/onnx-ao/model").exists()
    assert not (built_copy / "models/tiny/smoke/travel").exists()
    assert (built_copy / "models/tiny/onnx-ao/model.dvc").is_file()
    back = doit(built_copy)
    assert back.ran == [] and back.restored == ["export", "smoke:travel"], back.output
    unknown = doit(built_copy, "clean", "exprt")
    assert unknown.returncode == 2 and "no step 'exprt'" in unknown.output


def test_versions_as_json(built_copy):
    found = json.loads(doit(built_copy, "versions", "--json", "--artifact", "finetune").output)
    (only,) = found["finetune:travel"]
    assert only["in_workspace"] and only["md5"].endswith(".dir") and "last_loss" in only["metrics"]
