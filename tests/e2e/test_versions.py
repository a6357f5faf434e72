"""Versions with DVC: history, restore without recompute, the run-cache, remotes, metrics and gc.

Each test starts from a git repository holding two committed builds of the tiny project: v1 (the
defaults) and v2 (finetune.learning_rate 1e-3), and asserts which stages trained and which came
back from DVC's cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.pipeline import default_tasks
from tests.conftest import PLAIN, doit, edit_params, private_copy

pytestmark = pytest.mark.slow

LR_V1, LR_V2 = "learning_rate: 0.0002", "learning_rate: 0.001"
AFTER_FINETUNE = ["finetune:travel", "adapter:travel", "smoke:travel", "evaluate:travel"]
ADAPTER = "models/tiny/ft/travel.dvc"
RECORDS = ["params.yaml", "models", "data/prepared"]  # what a version is, in git
PLAIN_ENV = {**os.environ, **PLAIN}


def git(project: Path, *args: str) -> str:
    ident = ["-c", "user.name=lab", "-c", "user.email=lab@example.com"]
    return subprocess.run(["git", *ident, *args], cwd=project, check=True, capture_output=True, text=True).stdout


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, capture_output=True, text=True)


def content(project: Path, rev: str | None = None) -> str:
    """The adapter's DVC content hash, in the workspace or at a git revision."""
    text = git(project, "show", f"{rev}:{ADAPTER}") if rev else (project / ADAPTER).read_text()
    return next(line.split()[-1] for line in text.splitlines() if "md5:" in line)


@pytest.fixture(scope="module")
def history(built: Path, tmp_path_factory) -> Path:
    project = private_copy(built, tmp_path_factory.mktemp("history") / "project")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "v1: the lab's settings")
    edit_params(project, LR_V1, LR_V2)
    run = doit(project)
    assert (run.ran, run.restored) == (AFTER_FINETUNE, []), run.output
    git(project, "add", "-A")
    git(project, "commit", "-qm", "v2: learning rate 1e-3")
    return project


@pytest.fixture
def project(history: Path, tmp_path: Path) -> Path:
    return private_copy(history, tmp_path / "project")


def test_versions_lists_each_build_with_what_it_was_built_from(history):
    v1, v2 = (
        git(history, "rev-parse", "--short=8", "HEAD~1").strip(),
        git(history, "rev-parse", "--short=8", "HEAD").strip(),
    )
    run = doit(history, "versions", "--artifact", "finetune:travel")
    assert run.returncode == 0, run.output
    assert f"{v2} ●" in run.output and v1 in run.output  # ● the version in the workspace
    assert "learning_rate: 0.0002 → 0.001" in run.output and "first version" in run.output
    assert content(history)[:8] in run.output and content(history, "HEAD~1")[:8] in run.output
    assert "last_loss" in run.output
    every = doit(history, "versions")
    for dvc_file in [
        "prepared/tiny/travel.dvc",
        "base.dvc",
        "awq.dvc",
        ADAPTER,
        "onnx-ao/model.dvc",
        "smoke/travel.dvc",
    ]:
        assert dvc_file in every.output, dvc_file
    assert "adapters/travel.dvc" in every.output and "eval/travel.dvc" in every.output
    assert doit(history, "versions", "--artifact", "finetun").returncode == 1
    assert doit(history, "versions", "--artifact", "finetune:nobody").returncode == 1


def test_versions_diff_shows_the_build_records_side_by_side(history):
    run = doit(history, "versions", "--artifact", "lora", "--diff", "HEAD~1", "--to", "HEAD")  # finetune's alias
    assert run.returncode == 0, run.output
    line = next(line for line in run.output.splitlines() if "fingerprint.params.finetune.learning_rate" in line)
    assert "0.0002" in line and "0.001" in line
    assert "metrics.last_loss" in run.output
    # The adapter file, against the workspace: built from another finetune output, on the same model.
    adapter = doit(history, "versions", "--artifact", "adapter:travel", "--diff", "HEAD~1")
    assert "fingerprint.inputs.finetune:travel" in adapter.output, adapter.output
    assert "fingerprint.inputs.export" not in adapter.output, adapter.output


def test_dvc_metrics_show_and_diff_read_every_stage(history):
    shown = dvc(history, "metrics", "show")
    assert shown.returncode == 0, shown.stderr
    for stage in [
        "base",
        "quantize",
        "export",
        *(f"travel/{s}" for s in ("data", "finetune", "adapter", "smoke", "evaluate")),
    ]:
        assert f"models/metrics/tiny/{stage}.json" in shown.stdout, stage
    diff = dvc(history, "metrics", "diff", "HEAD~1", "HEAD")
    assert "models/metrics/tiny/travel/finetune.json" in diff.stdout and "last_loss" in diff.stdout, diff.stdout


def test_report_compares_with_the_previous_build(history):
    """`doit report` in v2's workspace compares with v1, the newest commit whose metrics differ."""
    v1 = git(history, "rev-parse", "--short", "HEAD~1").strip()
    run = doit(history, "report")
    assert run.returncode == 0, run.output
    page = (history / "models/tiny/report/index.html").read_text()
    assert f"Changed since {v1}" in page
    row = next(line for line in page.split("<tr>") if "finetune:travel.last_loss" in line)
    old, new = (
        json.loads(
            (history / "models/metrics/tiny/travel/finetune.json").read_text()
            if rev is None
            else git(history, "show", f"{rev}:models/metrics/tiny/travel/finetune.json")
        )["last_loss"]
        for rev in ("HEAD~1", None)
    )
    assert f"{old:.4g}" in row and f"{new:.4g}" in row and old != new


def test_report_and_versions_act_on_the_checkout_you_stand_in(project):
    """A second checkout using the first one's environment, through its console script (which, unlike
    `python -m doit`, does not put the cwd on sys.path): the commands read and write this checkout."""
    console_script = Path(sys.executable).parent / "doit"
    run = lambda *args: subprocess.run(  # noqa: E731
        [str(console_script), *args], cwd=project, capture_output=True, text=True, env=PLAIN_ENV
    )
    report = run("report")
    assert report.returncode == 0, report.stdout + report.stderr
    assert (project / "models/tiny/report/index.html").is_file()
    assert str(project / "models/tiny/report/index.html") in report.stdout
    versions = run("versions", "--artifact", "adapter")
    assert versions.returncode == 0, versions.stdout + versions.stderr
    assert "v2: learning rate 1e-3" in versions.stdout and "v1: the lab's settings" in versions.stdout


def test_changing_a_param_back_restores_from_the_run_cache(project):
    edit_params(project, LR_V2, LR_V1)
    run = doit(project)
    assert (run.ran, run.restored) == ([], AFTER_FINETUNE), run.output
    assert "restored from cache (checked out, no recompute)" in run.output
    assert content(project) == content(project, "HEAD~1")
    assert dvc(project, "status").stdout.strip() == "Data and pipelines are up to date."
    again = doit(project)
    assert again.ran == again.restored == []


def test_checking_out_an_older_version_brings_it_back_without_recompute(project):
    git(project, "checkout", "HEAD~1", "--", *RECORDS)
    run = doit(project)
    assert (run.ran, run.restored) == ([], AFTER_FINETUNE), run.output
    assert content(project) == content(project, "HEAD~1")
    assert dvc(project, "status").stdout.strip() == "Data and pipelines are up to date."


def test_fresh_clone_and_pull_recompute_nothing(project, tmp_path):
    """Push to the default remote (a folder beside the checkout), clone, pull, build: all restored.
    The run-cache travels too: the clone gets v1 back by a params edit alone."""
    pushed = doit(project, "push")
    assert pushed.returncode == 0 and "pushed" in pushed.output, pushed.output
    assert (tmp_path / "olive-lab-dvc-remote" / "runs").is_dir()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    pulled = doit(clone, "pull")
    assert pulled.returncode == 0, pulled.output
    run = doit(clone)
    assert (run.ran, run.restored) == ([], default_tasks()), run.output
    assert "nothing to do" in doit(clone).output
    edit_params(clone, LR_V2, LR_V1)
    back = doit(clone)
    assert (back.ran, back.restored) == ([], AFTER_FINETUNE), back.output


def test_push_without_a_remote_says_how_to_add_one(project):
    dvc(project, "remote", "remove", "local")
    run = doit(project, "push")
    assert run.returncode == 1 and "no DVC remote: `dvc remote add -d" in run.output, run.output


def _object(project: Path, md5: str) -> Path:
    return project / ".dvc/cache/files/md5" / md5[:2] / md5[2:]


def test_a_corrupted_cache_object_is_rebuilt_not_restored(project):
    """v1's adapter weights, damaged in the cache and made read-only again (DVC's cheap check trusts
    read-only objects): the hash check catches it and finetune retrains; what follows is restored."""
    listing = json.loads(_object(project, content(project, "HEAD~1")).read_text())
    weights = _object(project, next(e["md5"] for e in listing if e["relpath"].endswith(".safetensors")))
    weights.chmod(0o644)
    with weights.open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    weights.chmod(0o444)
    edit_params(project, LR_V2, LR_V1)
    run = doit(project)
    assert "its cached copy is corrupted (DVC's hash check failed" in run.output, run.output
    # The tiny build is deterministic: the retrained adapter is v1's, so what follows comes back.
    assert (run.ran, run.restored) == (AFTER_FINETUNE[:1], AFTER_FINETUNE[1:]), run.output
    assert content(project) == content(project, "HEAD~1")


def test_gc_keeps_every_version_a_commit_references(project):
    """`dvc gc --workspace --all-commits` drops a build no commit names and keeps v1 and v2."""
    edit_params(project, LR_V2, "learning_rate: 0.0005")
    assert doit(project).ran == AFTER_FINETUNE  # v3, never committed
    git(project, "checkout", "HEAD", "--", *RECORDS)
    assert doit(project).restored == AFTER_FINETUNE  # back to v2
    gc = dvc(project, "gc", "--workspace", "--all-commits", "--force")
    assert gc.returncode == 0, gc.stderr
    git(project, "checkout", "HEAD~1", "--", *RECORDS)
    v1 = doit(project)
    assert (v1.ran, v1.restored) == ([], AFTER_FINETUNE), v1.output
    edit_params(project, LR_V1, "learning_rate: 0.0005")
    v3 = doit(project)
    assert v3.ran == AFTER_FINETUNE and "not in the DVC cache" in v3.output, v3.output
