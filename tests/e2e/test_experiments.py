"""Experiments on the tiny model: a 2 x 2 finetune grid from a clean checkout, killed with SIGKILL
half-way and finished by the same command; its record, table and pick; a trial applied to
params.yaml with nothing computed; a failing trial beside a good one; quality gates in a plain doit.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import doit, edit_params, make_project

pytestmark = pytest.mark.slow

GRID = ["-S", "finetune.lora_r=4,8", "-S", "finetune.learning_rate=1e-4,2e-4"]
TRIALS = {"r4-lr1e-4", "r4-lr2e-4", "r8-lr1e-4", "r8-lr2e-4"}
SWEEP = "lora_r-learning_rate"
# Sized for the test, not for quality: a few optimizer steps, a short evaluation.
FAST = [
    ("max_steps: 100", "max_steps: 6"),
    ("max_new_tokens: 64", "max_new_tokens: 8"),
    ("max_examples: 0 ", "max_examples: 4 "),
    ("decode_tokens: 64", "decode_tokens: 8"),
    ("decode_rounds: 3", "decode_rounds: 1"),
]


def built_units(output: str) -> list[tuple[str, str]]:
    """(step, unit) of every unit the sweep's output says it built."""
    return re.findall(r"^✔ ([\w:-]+) (\S+) built", output, flags=re.M)


def record(project: Path, sweep: str = SWEEP) -> dict:
    return json.loads((project / "models" / "experiments" / f"{sweep}.json").read_text())


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A clean checkout (nothing built), the grid killed by SIGKILL right after its first finetune
    step was stored, then the same command run again. Returns (project, dry run, killed, finished)."""
    project = make_project(tmp_path_factory.mktemp("experiments") / "project")
    for old, new in FAST:
        edit_params(project, old, new)
    dry = doit(project, "exp", "run", *GRID, "--dry-run")
    assert not (project / "models" / "experiments").exists(), "a dry run builds nothing"
    killed = doit(project, "exp", "run", *GRID, env={"LAB_FAILPOINT": "finetune:tracked:parent"})
    finished = doit(project, "exp", "run", *GRID)
    return project, dry, killed, finished


def test_a_grid_builds_each_shared_step_once_and_a_killed_sweep_finishes_without_rebuilding(swept):
    project, dry, killed, finished = swept
    assert dry.returncode == 0, dry.output
    assert "20 distinct steps for 32 trial steps: 20 to build" in dry.output
    assert killed.returncode != 0 and "✔ finetune:travel" not in killed.output, killed.output
    assert finished.returncode == 0, finished.output
    first, second = built_units(killed.output), built_units(finished.output)
    assert first and not set(first) & set(second), "a step finished before the kill was built again"
    # What the killed run built comes back from the cache, and so does the finetune step the kill
    # interrupted after it was stored (never reported built).
    cached = re.findall(r"^↺ ([\w:-]+) (\S+) cached", finished.output, flags=re.M)
    interrupted = [step for step, unit in cached if (step, unit) not in first]
    assert set(first) <= set(cached) and interrupted == ["finetune:travel"], finished.output
    runs = Counter(step for step, _ in first + second) + Counter(interrupted)
    assert runs == {"data:travel": 1, "base": 1, "quantize": 1, "export": 1, "finetune:travel": 4,
                    "adapter:travel": 4, "smoke:travel": 4, "evaluate:travel": 4}  # fmt: skip
    doc = record(project)
    assert set(doc["trials"]) == TRIALS and doc["finished"]
    for name, trial in doc["trials"].items():
        assert trial["status"] == "done", (name, trial)
        assert trial["metrics"]["travel"]["ppl"] > 0 and trial["metrics"]["travel"]["size_mb"] > 0
    shared = {t["steps"]["quantize"]["unit"] for t in doc["trials"].values()}
    tuned = {t["steps"]["finetune:travel"]["unit"] for t in doc["trials"].values()}
    assert len(shared) == 1 and len(tuned) == 4
    assert not list(project.glob("models/tiny/**/*.dvc")), "the sweep wrote into the workspace's folders"


def test_a_dry_run_after_the_sweep_plans_nothing_to_build(swept):
    project = swept[0]
    dry = doit(project, "exp", "run", *GRID, "--dry-run")
    assert "0 to build, 20 from DVC's cache" in dry.output, dry.output


def test_show_as_json_and_where_and_best_pick_under_constraints(swept):
    project = swept[0]
    shown = doit(project, "exp", "show", "--json")
    rows = json.loads(shown.output)["trials"]
    assert {r["trial"] for r in rows} == TRIALS and all(r["feasible"] for r in rows)
    assert {r["params"]["finetune.lora_r"] for r in rows} == {4, 8}
    assert any(r["pareto"] for r in rows)
    sizes = sorted(r["metrics"]["size_mb"] for r in rows)
    limit = (sizes[0] + sizes[-1]) / 2  # rank 4 adapters are smaller than rank 8 ones
    where = doit(project, "exp", "show", "--json", "--where", f"size_mb <= {limit}", "--sort", "ppl,-decode_tok_s")
    kept = json.loads(where.output)["trials"]
    feasible = [r for r in kept if r["feasible"]]
    assert {r["params"]["finetune.lora_r"] for r in feasible} == {4}
    assert [r["metrics"]["ppl"] for r in feasible] == sorted(r["metrics"]["ppl"] for r in feasible)
    assert all(not r["feasible"] for r in kept[len(feasible) :])
    best = doit(project, "exp", "best", "--where", f"size_mb <= {limit}", "--sort", "ppl")
    assert best.returncode == 0 and best.output.strip() == feasible[0]["trial"]
    none = doit(project, "exp", "best", "--where", "size_mb < 0")
    assert none.returncode == 1 and "no trial" in none.output
    unknown = doit(project, "exp", "show", "--where", "size < 3")
    assert unknown.returncode == 2 and "unknown metric 'size'" in unknown.output and "size_mb" in unknown.output


def test_apply_restores_a_trial_with_nothing_computed_and_keeps_the_params_comments(swept):
    project = swept[0]
    before = (project / "params.yaml").read_text().splitlines()
    applied = doit(project, "exp", "apply", "r8-lr1e-4")
    assert applied.returncode == 0, applied.output
    assert applied.ran == [] and len(applied.restored) == 8, applied.output
    after = (project / "params.yaml").read_text().splitlines()
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert [b.split("#")[0].strip() for _, b in changed] == [
        "learning_rate: 0.0001",
        "lora_r: 8",
    ], changed
    assert all(a.split("#", 1)[1:] == b.split("#", 1)[1:] for a, b in changed)
    trial = record(project)["trials"]["r8-lr1e-4"]
    adapter = (project / "models/tiny/ft/travel.dvc").read_text()
    assert trial["steps"]["finetune:travel"]["md5"] in adapter
    assert doit(project).ran == []


def test_a_failing_trial_is_recorded_with_its_log_while_the_others_finish(swept):
    project = swept[0]
    run = doit(project, "exp", "run", "--name", "modules", "-S", "finetune.target_modules=[q_proj],[o_proj]")
    assert run.returncode == 1, run.output
    trials = record(project, "modules")["trials"]
    bad, good = trials["target_modules0"], trials["target_modules1"]
    assert good["status"] == "done" and good["metrics"]["travel"]["ppl"] > 0
    assert bad["status"] == "failed" and "q_proj" in (project / bad["log"]).read_text()
    assert bad["steps"]["evaluate:travel"]["how"] == "skipped"
    assert "trial target_modules0 failed" in run.output


def test_gates_fail_a_plain_build_naming_the_figures_and_pass_when_met(swept):
    project = swept[0]
    with (project / "params.yaml").open("a") as f:
        f.write("\ngates:\n  awq_cost: ppl_awq <= 1.10 * ppl_base\n  adapter_helps: ppl_awq_adapter < ppl_awq / 100\n")
    failed = doit(project)
    assert failed.returncode != 0 and failed.failed == ["gates"], failed.output
    assert "gates.adapter_helps" in failed.output and "ppl_awq_adapter" in failed.output
    assert "gates.awq_cost" not in failed.output and failed.ran == []
    assert doit(project).failed == ["gates"], "a failed gate keeps failing until fixed"
    edit_params(project, "ppl_awq / 100", "ppl_awq")
    passed = doit(project)
    assert passed.returncode == 0 and passed.ran == ["gates"], passed.output


def test_apply_of_a_trial_whose_builds_are_gone_says_which_steps_would_rebuild(swept):
    project = swept[0]
    shutil.rmtree(project / ".dvc" / "cache" / "runs")
    shutil.rmtree(project / "models" / "experiments" / SWEEP)
    refused = doit(project, "exp", "apply", "r4-lr2e-4")
    assert refused.returncode == 2 and "finetune:travel" in refused.output and "--rebuild" in refused.output
    assert "lora_r: 8" in (project / "params.yaml").read_text(), "a refused apply changed params.yaml"
