"""The command line's own pieces, without a build."""

from __future__ import annotations

import subprocess

import pytest

from tasks.cli.versions import file_at


def test_a_revision_that_looks_like_an_option_is_never_obeyed(tmp_path):
    """`doit report --against=--output=<file>` must not make git write <file> (`git show --output`)."""
    git = ["git", "-c", "user.name=lab", "-c", "user.email=lab@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "metrics.json").write_text('{"loss": 1.0}\n')
    subprocess.run([*git, "add", "metrics.json"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "v1"], cwd=tmp_path, check=True)
    assert file_at(tmp_path, "HEAD", "metrics.json") == '{"loss": 1.0}\n'
    with pytest.raises(subprocess.CalledProcessError):
        file_at(tmp_path, f"--output={tmp_path / 'written'}", "metrics.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".git", "metrics.json"]


def test_the_azure_transport_hook_imports_only_the_tests_fakes(monkeypatch):
    from tasks.azureml.client import TRANSPORT_ENV, transport_kwargs
    from tasks.errors import StageError

    monkeypatch.setenv(TRANSPORT_ENV, "os:system")
    with pytest.raises(StageError, match=r"LAB_AZURE_TRANSPORT=os:system: only the tests' fakes"):
        transport_kwargs()


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A checkout with nothing built."""
    from tests.conftest import make_project

    return make_project(tmp_path_factory.mktemp("fresh"))


def test_list_shows_the_stages_in_build_order_and_which_a_plain_doit_skips(fresh):
    from tasks.pipeline import STAGES
    from tests.conftest import doit

    run = doit(fresh, "list")
    assert run.returncode == 0, run.output
    lines = run.output.splitlines()
    assert [line.split()[0] for line in lines] == [stage.name for stage in STAGES]
    assert [line for line in lines if "not in a plain `doit`" in line] == [lines[-1]]  # register


def test_register_without_settings_fails_before_building_anything(fresh):
    from tests.conftest import doit

    run = doit(fresh, "register")
    assert run.returncode == 1 and run.failed == ["register"] and run.ran == [], run.output
    assert "azure.subscription_id, azure.resource_group, azure.workspace not set" in run.output
    assert "▶ data" not in run.output and not (fresh / "models").exists()


def test_info_says_first_whether_a_stage_is_stale_and_why(fresh):
    from tests.conftest import doit

    run = doit(fresh, "info", "finetune:travel")
    assert run.returncode == 1  # doit info's own rule: 1 when the task would run
    assert (
        run.output.splitlines()[0].startswith("finetune:travel: stale: ") and "ft/travel.dvc is missing" in run.output
    )


def test_parallel_runs_are_refused(fresh):
    from tests.conftest import doit

    run = doit(fresh, "-n", "2")
    assert run.returncode == 3 and "stages cannot run in parallel (doit -n)" in run.output
    assert run.ran == [] and not (fresh / "models").exists()


def test_versions_help_lists_every_artifact_and_keeps_sentences_whole(fresh):
    from tasks.pipeline import STAGES
    from tests.conftest import doit

    text = doit(fresh, "help", "versions").output
    described = " ".join(text.split("DESCRIPTION")[1].split())
    assert all(f" {stage.name}" in described for stage in STAGES)
    assert "(REV_B defaults to the workspace" not in text  # the old hard-wrapped paragraph
    assert "--to=ARG" in text


def test_versions_diff_takes_one_revision_and_leaves_the_next_option_alone(fresh):
    from tests.conftest import doit

    run = doit(fresh, "versions", "--diff", "HEAD~1", "--artifact", "nonsense")
    assert run.returncode == 1 and "no artifact 'nonsense'" in run.output, run.output
    stray = doit(fresh, "versions", "--diff", "HEAD~1", "HEAD")
    assert stray.returncode == 1 and "revisions go after --diff and --to" in stray.output
