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
