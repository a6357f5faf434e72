"""Incrementality and forcing: apply one change to a built project, assert exactly which stages ran.

Staleness is by content: a stage re-runs when its params section, its code, its libraries or the
content of an input changed. A rebuilt stage whose output is byte-identical (the tiny build is
deterministic) leaves the stages after it up to date. A stale stage whose exact inputs were built
before comes back from DVC's cache instead (tests/test_versions.py has the version stories).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.pipeline import default_tasks
from tests.conftest import PLAIN, doit, edit_params, make_project

pytestmark = pytest.mark.slow

ALL = default_tasks()  # the steps of the default build, in build order


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
    # (data section: test_doit_stage_builds_up_to_that_stage_and_no_further, where every step runs)
    "data file": (
        lambda p: _append(
            p, "data/data_sample_travel.jsonl", '\r\n{"prompt": "Best pizza in Naples?", "response": "Da Michele."}'
        ),
        ALL,
    ),
    # (base and quantize sections: tests/e2e/test_adapters.py, where both adapters rebuild)
    # The model's graph does not depend on the adapter's training: export stays up to date.
    # (finetune section: tests/e2e/test_versions.py, whose learning-rate edits rebuild exactly
    # finetune, adapter, smoke, evaluate)
    # (export section: test_export_with_fp32_compute_matches_torch_closely, where export and after run)
    "smoke section": (lambda p: edit_params(p, "max_new_tokens: 64", "max_new_tokens: 16"), ["smoke:travel"]),
    "evaluate section": (lambda p: edit_params(p, "match_tokens: 8", "match_tokens: 4"), ["evaluate:travel"]),
    # The code of export changes; its rebuilt model has the same bytes, so smoke stays up to date.
    "export's code": (lambda p: _append(p, "tasks/stages/export.py", "# reviewed\n"), ["export"]),
    # A helper only base imports: base re-runs (its code fingerprint is derived from its imports),
    # its output has the same bytes, so quantize and the rest stay up to date.
    "a helper of base": (lambda p: _append(p, "tasks/ml/synthetic_model.py", "# reviewed\n"), ["base"]),
    # The chat template's rendering: the stages that render or tokenize with it (calibration,
    # training, smoke, evaluate); the rebuilt AWQ model and adapter have the same bytes.
    "the template's rendering": (
        lambda p: _append(p, "tasks/ml/chat_template.py", "# reviewed\n"),
        ["quantize", "finetune:travel", "smoke:travel", "evaluate:travel"],
    ),
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


def test_profile_a_stage(built_copy):
    """LAB_PROFILE=1: the stage's cProfile stats beside its log, the top entries in it."""
    import pstats

    run = doit(built_copy, "-s", "-a", "smoke", env={"LAB_PROFILE": "1"})  # the stage: every adapter's
    assert run.returncode == 0 and run.ran == ["smoke:travel"], run.output
    stats = pstats.Stats(str(built_copy / "logs/smoke.travel.prof"))
    assert any(func[2] == "run" and func[0].endswith("smoke.py") for func in stats.stats)
    assert "Ordered by: cumulative time" in (built_copy / "logs/smoke.travel.log").read_text()


def _stage_processes_in(project: Path) -> list[int]:
    """pids of stage processes (spares included) whose folder is `project`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"tasks.engine.child" in (proc / "cmdline").read_bytes() and (proc / "cwd").resolve() == project:
                found.append(int(proc.name))
        except OSError:  # it ended while we looked
            continue
    return found


def test_each_stage_after_the_first_runs_in_a_spare_and_none_is_left(built):
    """A spare process imports torch and transformers while the stage before it runs, and builds
    the next step (tasks/engine/spare.py); the build leaves no stage process behind."""
    logs = {step: (built / "logs" / f"{step.replace(':', '.')}.log").read_text() for step in ALL}
    assert f"stage {ALL[0]}: started (pid" in logs[ALL[0]] and "started for it" in logs[ALL[0]]
    assert all("a spare, CUDA_VISIBLE_DEVICES" in logs[step] for step in ALL[1:]), logs
    assert _stage_processes_in(built.resolve()) == []


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


@pytest.mark.parametrize(
    ("dist", "step"),
    [
        # Imported by no code of ours: transformers reads a GGUF file through it. (A library the code
        # imports, olive-ai for finetune: tests/unit/test_engine.py, found by the same scan.)
        ("gguf", "base"),
    ],
)
def test_a_library_version_bump_makes_the_stages_using_it_stale(built_copy, tmp_path, dist, step):
    """A newer version (its metadata, on PYTHONPATH ahead of the installed one): the one stage that
    uses it rebuilds; its output has the same bytes, so nothing after it runs."""
    info_dir = tmp_path / "newer" / f"{dist.replace('-', '_')}-99.0.0.dist-info"
    info_dir.mkdir(parents=True)
    (info_dir / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 99.0.0\n")
    env = {"PYTHONPATH": str(tmp_path / "newer")}
    info = doit(built_copy, "info", step, env=env)
    assert info.output.startswith(f"{step}: stale: changed: libraries.{dist}"), info.output
    run = doit(built_copy, env=env)
    assert run.returncode == 0 and run.ran == [step], run.output
    back = doit(built_copy)  # the installed version again: the build made with it comes back from the cache
    assert (back.ran, back.restored) == ([], [step]), back.output


def test_forcing_recomputes_even_when_the_run_cache_holds_the_build(built_copy):
    """`doit -s -a X` recomputes X although its fingerprint is in the run-cache (a build the user
    distrusts); `doit forget --drop-cache X` drops the run-cache entries of X's build."""
    edit_params(built_copy, "seed: 42", "seed: 43")
    assert doit(built_copy, "data:travel").ran == ["data:travel"]
    edit_params(built_copy, "seed: 43", "seed: 42")  # stale again; its build is in the run-cache
    run = doit(built_copy, "-s", "-a", "data:travel")
    assert run.returncode == 0 and (run.ran, run.restored) == (["data:travel"], []), run.output
    edit_params(built_copy, "seed: 42", "seed: 43")
    # The workspace's build (seed 42: its first build and the forced one, a record each) and the
    # build its inputs now make (seed 43).
    dropped = doit(built_copy, "forget", "--drop-cache", "data:travel")
    assert dropped.returncode == 0 and "data:travel: dropped 3 run-cache entries" in dropped.output, dropped.output
    run = doit(built_copy, "data:travel")  # seed 43 again: built, no longer restored
    assert (run.ran, run.restored) == (["data:travel"], []), run.output


def _waiting_doit(project: Path, *args: str) -> subprocess.Popen:
    """A `doit` that queues behind the run lock (held by the test), once it says so."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "doit", *args],
        cwd=project,
        env={**os.environ, **PLAIN, "LAB_WAIT_FOR_LOCK": "1"},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert "waiting for the doit run building in this checkout" in proc.stdout.readline()
    return proc


def test_params_edited_while_a_run_waits_are_refused_not_built_under_the_old_fingerprint(built_copy):
    from tasks.engine.runlock import RunLock

    edit_params(built_copy, "seed: 42", "seed: 43")  # what the waiting run plans with
    lock = RunLock(built_copy / ".doit.lock")
    lock.acquire(wait=False)
    for command in (["info", "data:travel"], ["list", "--status"]):  # they write doit's record: locked too
        refused = doit(built_copy, *command)
        assert refused.returncode == 3 and "another doit run is building in this checkout" in refused.output
    waiting = _waiting_doit(built_copy, "data:travel")
    edit_params(built_copy, "seed: 43", "seed: 44")  # edited while it waits
    lock.release()
    output = waiting.communicate(timeout=300)[0]
    assert waiting.returncode == 1, output
    assert "params.yaml changed after this run planned its steps" in " ".join(output.split())
    assert "seed: 42" in (built_copy / "data/prepared/tiny/travel.dvc").read_text()  # nothing built


def test_a_cache_outside_the_project_is_used_for_every_check(tmp_path):
    """`dvc cache dir` elsewhere (a shared cache): a touched output is checked against the manifest
    in that cache (same bytes: nothing to do), not checked out again for want of it."""
    project = make_project(tmp_path / "project")
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "cache", "dir", str(tmp_path / "shared-cache")], cwd=project, check=True)
    assert doit(project, "data:travel").ran == ["data:travel"]
    assert list((tmp_path / "shared-cache/files/md5").glob("*/*.dir")) and not (project / ".dvc/cache/files").exists()
    os.utime(project / "data/prepared/tiny/travel/train.jsonl", ns=(1, 1))  # touched, same bytes
    run = doit(project, "data:travel")
    assert run.returncode == 0 and (run.ran, run.restored) == ([], []), run.output


def test_doit_stage_builds_up_to_that_stage_and_no_further(built_copy):
    edit_params(built_copy, "eval_fraction: 0.1", "eval_fraction: 0.2")  # every stage is stale
    run = doit(built_copy, "finetune")  # the stage: every adapter's finetune, and what they need
    assert run.returncode == 0 and run.ran == ["data:travel", "base", "quantize", "finetune:travel"], run.output
    assert doit(built_copy).ran == ALL[4:]
