"""Incrementality and forcing: apply one change to a built project, assert exactly which stages ran.

Staleness is by content: a stage re-runs when its params section, its code, its libraries or the
content of an input changed. A rebuilt stage whose output is byte-identical (the tiny build is
deterministic) leaves the stages after it up to date. A stale stage whose exact inputs were built
before comes back from DVC's cache instead (tests/test_versions.py has the version stories).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.pipeline import default_tasks
from tests.conftest import doit, edit_params

pytestmark = pytest.mark.slow

ALL = default_tasks()  # the steps of the default build, in build order
ADAPTER_CHAIN = ["finetune:travel", "adapter:travel", "smoke:travel", "evaluate:travel"]


def _append(project: Path, rel: str, text: str) -> None:
    path = project / rel
    path.chmod(0o644)  # DVC's hardlinked outputs are read-only, as a hand edit would find them
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


def _edit_through_the_link(project: Path) -> None:
    path = project / "models/tiny/ft/travel/adapter_config.json"
    assert path.stat().st_nlink == 2 and path.stat().st_mode & 0o777 == 0o444  # as a checkout has it
    _append(project, "models/tiny/ft/travel/adapter_config.json", " ")


def _local_base(project: Path) -> None:
    """Switch to `source: local`, a folder holding the very checkpoint the tiny source made."""
    folder = shutil.copytree(project / "models/tiny/base", project.parent / "checkpoint")
    edit_params(project, "source: synthetic ", f"source: local\n  path: {folder}\n ")


CHANGES = {
    "comment in params.yaml": (lambda p: _append(p, "params.yaml", "# a note\n"), []),
    "data section": (lambda p: edit_params(p, "eval_fraction: 0.1", "eval_fraction: 0.2"), ALL),
    "data file": (
        lambda p: _append(
            p, "data/data_sample_travel.jsonl", '\r\n{"prompt": "Best pizza in Naples?", "response": "Da Michele."}'
        ),
        ALL,
    ),
    # (base and quantize sections: tests/e2e/test_adapters.py, where both adapters rebuild)
    # The model's graph does not depend on the adapter's training: export stays up to date.
    "finetune section": (lambda p: edit_params(p, "max_steps: 100", "max_steps: 30"), ADAPTER_CHAIN),
    "export section": (lambda p: edit_params(p, "accuracy_level: 4", "accuracy_level: 1"), ALL[4:]),
    "smoke section": (lambda p: edit_params(p, "max_new_tokens: 64", "max_new_tokens: 16"), ["smoke:travel"]),
    "evaluate section": (lambda p: edit_params(p, "match_tokens: 8", "match_tokens: 4"), ["evaluate:travel"]),
    # The code of export changes; its rebuilt model has the same bytes, so smoke stays up to date.
    "export's code": (lambda p: _append(p, "tasks/stages/export.py", "# reviewed\n"), ["export"]),
    # A helper only base imports: base re-runs (its code fingerprint is derived from its imports),
    # its output has the same bytes, so quantize and the rest stay up to date.
    "a helper of base": (lambda p: _append(p, "tasks/ml/synthetic_model.py", "# reviewed\n"), ["base"]),
    # Restored from DVC's cache: same inputs, and the cached copy passes DVC's hash check.
    "quantize output deleted": (lambda p: shutil.rmtree(p / "models/tiny/awq"), [], ["quantize"]),
    # The edit goes through DVC's hard link into the cache, whose hash check then fails: rebuilt,
    # with the same bytes, so nothing after it runs.
    "adapter edited in place": (_edit_through_the_link, ["finetune:travel"]),
    # A file added by hand: the folder no longer matches its record; the version DVC holds comes back.
    "file added to an artifact by hand": (
        lambda p: (p / "models/tiny/awq/notes.txt").write_text("x"),
        [],
        ["quantize"],
    ),
    # The same bytes from another source: base re-runs, its content hash is unchanged, nothing else runs.
    "base from a local folder": (_local_base, ["base"]),
    # Every output folder and .dvc file of the model gone: all of it comes back from the run-cache
    # (found on the H200: the restore wrote the .dvc file into a folder that no longer existed).
    "models/<name> deleted": (lambda p: shutil.rmtree(p / "models/tiny"), [], ALL[1:]),
    # The run-cache holds the build this .dvc file described.
    ".dvc file deleted": (lambda p: (p / "models/tiny/smoke/travel.dvc").unlink(), [], ["smoke:travel"]),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_runs_exactly_the_stale_stages(built_copy, change):
    apply, expected, *restored = CHANGES[change]
    apply(built_copy)
    run = doit(built_copy)
    assert run.returncode == 0, run.output
    assert run.ran == expected, run.output
    assert run.restored == (restored[0] if restored else []), run.output
    again = doit(built_copy)
    assert again.ran == again.restored == [], "a second run after the change does nothing"


def test_force_one_stage_alone(built_copy):
    """`doit -s -a finetune:travel` re-runs that finetune and nothing else."""
    run = doit(built_copy, "-s", "-a", "finetune:travel")
    assert run.returncode == 0 and run.ran == ["finetune:travel"], run.output


def test_profile_a_stage(built_copy):
    """LAB_PROFILE=1: the stage's cProfile stats beside its log, the top entries in it."""
    import pstats

    run = doit(built_copy, "-s", "-a", "smoke", env={"LAB_PROFILE": "1"})  # the stage: every adapter's
    assert run.returncode == 0 and run.ran == ["smoke:travel"], run.output
    stats = pstats.Stats(str(built_copy / "logs/smoke.travel.prof"))
    assert any(func[2] == "run" and func[0].endswith("smoke.py") for func in stats.stats)
    assert "Ordered by: cumulative time" in (built_copy / "logs/smoke.travel.log").read_text()


def test_forget_verifies_the_output_instead_of_recomputing(built_copy):
    """`doit forget finetune:travel && doit`: doit's record is gone, the .dvc record still matches, so
    the adapter is hash-checked against DVC's cache and kept; `doit -a` is the way to recompute."""
    assert doit(built_copy, "forget", "finetune:travel").returncode == 0
    run = doit(built_copy)
    assert (run.ran, run.restored) == ([], ["finetune:travel"]), run.output
    assert "verified in place" in run.output


def test_info_says_first_why_a_stage_is_stale_or_that_it_is_up_to_date(built_copy):
    run = doit(built_copy, "info", "finetune:travel")
    assert run.returncode == 0 and run.output.startswith("finetune:travel: up to date"), run.output
    edit_params(built_copy, "max_steps: 100", "max_steps: 30")
    run = doit(built_copy, "info", "finetune:travel")
    assert run.returncode == 1
    assert run.output.startswith("finetune:travel: stale: changed: params.finetune.max_steps"), run.output


def test_export_with_fp32_compute_matches_torch_closely(built_copy):
    """With accuracy_level 1 (fp32 compute) the ONNX logits match the torch reference to 1e-3."""
    from tests.e2e.reference import logits_error

    edit_params(built_copy, "accuracy_level: 4", "accuracy_level: 1")
    assert doit(built_copy).ran == ALL[4:]
    error, adapter_effect, error_without = logits_error(built_copy)
    assert error < 1e-3 and error_without < 1e-3
    assert adapter_effect > 100 * error


@pytest.mark.parametrize("stage", ["base", "export"])  # quantize, finetune: see the table above
def test_a_forced_rebuild_gives_the_same_bytes(built_copy, stage):
    """Same inputs, same bytes: a forced rebuild leaves the content hash, so nothing after it runs."""
    dvc = {"base": "base", "quantize": "awq", "finetune": "ft/travel", "export": "onnx-ao/model"}[stage]
    before = _md5_line(built_copy / f"models/tiny/{dvc}.dvc")
    assert doit(built_copy, "-s", "-a", stage).ran == [stage]
    assert _md5_line(built_copy / f"models/tiny/{dvc}.dvc") == before
    assert doit(built_copy).ran == []


def _md5_line(dvc_file: Path) -> str:
    return next(line for line in dvc_file.read_text().splitlines() if "md5:" in line)


def test_a_library_version_bump_makes_the_stages_using_it_stale(built_copy, tmp_path):
    """A newer olive-ai (its metadata, on PYTHONPATH ahead of the installed one): finetune, the one
    stage that uses it, rebuilds; its output has the same bytes, so nothing after it runs."""
    dist = tmp_path / "newer" / "olive_ai-99.0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: olive-ai\nVersion: 99.0.0\n")
    env = {"PYTHONPATH": str(tmp_path / "newer")}
    info = doit(built_copy, "info", "finetune:travel", env=env)
    assert info.output.startswith("finetune:travel: stale: changed: libraries.olive-ai"), info.output
    run = doit(built_copy, env=env)
    assert run.returncode == 0 and run.ran == ["finetune:travel"], run.output
    back = doit(built_copy)  # the installed version again: the build made with it comes back from the cache
    assert (back.ran, back.restored) == ([], ["finetune:travel"]), back.output


def test_doit_stage_builds_up_to_that_stage_and_no_further(built_copy):
    edit_params(built_copy, "eval_fraction: 0.1", "eval_fraction: 0.2")  # every stage is stale
    run = doit(built_copy, "finetune")  # the stage: every adapter's finetune, and what they need
    assert run.returncode == 0 and run.ran == ["data:travel", "base", "quantize", "finetune:travel"], run.output
    assert doit(built_copy).ran == ALL[4:]
