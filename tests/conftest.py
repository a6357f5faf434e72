"""Fixtures: throw-away copies of the project (a git + DVC repo) and a way to run doit in them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.pipeline import default_tasks

ROOT = Path(__file__).resolve().parent.parent
# The user's shell must not steer the tests: `LAB_PARAMS=params/tiny.yaml` exported for a tiny build,
# a LAB_FAILPOINT or LAB_WAIT_FOR_LOCK left set, would change what every doit below builds. Tests
# start from none of them (a test that needs one passes it); LAB_FAULT_MATRIX selects tests only.
TEST_SWITCHES = ("LAB_FAULT_MATRIX",)
for _name in [n for n in os.environ if n.startswith("LAB_") and n not in TEST_SWITCHES]:
    del os.environ[_name]
PROJECT_FILES = [
    "dodo.py",
    "params.yaml",
    "pyproject.toml",
    "tasks",
    "data/data_sample_travel.jsonl",
    "dvc.yaml",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
    ".gitignore",
]


@dataclass
class Run:
    returncode: int
    output: str

    @property
    def ran(self) -> list[str]:
        """Stages the reporter says finished, in order."""
        return re.findall(r"^✔ ([\w:-]+)", self.output, flags=re.M)

    @property
    def restored(self) -> list[str]:
        """Stages the reporter says came back from the DVC cache, without recompute."""
        return re.findall(r"^↺ ([\w:-]+) restored from cache", self.output, flags=re.M)

    @property
    def failed(self) -> list[str]:
        return re.findall(r"^✘ ([\w:-]+) failed", self.output, flags=re.M)


TINY = "params/tiny.yaml"  # the tests build the tiny model; one test builds the default (a real one)


def streamed_answers(output: str) -> dict[str, tuple[str, int]]:
    """{"adapter travel" | "no adapter": (streamed text, token count)} from `doit ask`'s output."""
    found = re.findall(r"^(adapter \w+|no adapter)\n(.*?)\n(\d+) tokens, ", output, flags=re.M | re.S)
    return {label: (text, int(count)) for label, text, count in found}


def make_project(dest: Path, params: str = TINY) -> Path:
    """A fresh checkout of the project's tracked sources in `dest`, as a git repository, with
    `params` (a file of the project's) as its params.yaml."""
    for rel in PROJECT_FILES:
        src, dst = ROOT / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    shutil.copy2(ROOT / params, dest / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


PLAIN = {"NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb"}


def as_in_a_terminal() -> None:
    """preexec_fn for a `doit` that a test will Ctrl-C: SIGINT handled as in a terminal. A test run
    started in the background (`make test &`) inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def doit(project: Path, *args: str, env: dict | None = None, preexec_fn=None, timeout: int = 900) -> Run:
    """Run the doit CLI in `project` as a user would (plus `env`); the output is plain text."""
    proc = subprocess.run(
        [sys.executable, "-m", "doit", *args],
        cwd=project,
        env={**os.environ, **PLAIN, **(env or {})},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )
    return Run(proc.returncode, proc.stdout)


def edit_params(project: Path, old: str, new: str) -> None:
    path = project / "params.yaml"
    text = path.read_text()
    assert old in text, f"{old!r} not in params.yaml"
    path.write_text(text.replace(old, new, 1))


def build(dest: Path, *edits: tuple[str, str]) -> Path:
    """A clean checkout in `dest`, params edited, built by `doit` (every stage must run)."""
    project = make_project(dest)
    for old, new in edits:
        edit_params(project, old, new)
    run = doit(project)
    assert run.returncode == 0, run.output
    assert run.ran == default_tasks(), run.output
    return project


def private_copy(project: Path, dest: Path) -> Path:
    """A copy of a built project (artifacts, DVC cache and doit's records) for one test to change,
    as a checkout looks: files hard-linked to each other (a workspace file and its DVC cache
    object, link count 2, mode 444) stay hard-linked to each other in the copy."""
    copied: dict[tuple[int, int], str] = {}

    def copy(src: str, dst: str) -> str:
        st = os.stat(src)
        if st.st_nlink > 1 and (st.st_dev, st.st_ino) in copied:
            os.link(copied[(st.st_dev, st.st_ino)], dst)
            return dst
        shutil.copy2(src, dst)
        copied[(st.st_dev, st.st_ino)] = dst
        return dst

    shutil.copytree(project, dest, symlinks=True, copy_function=copy)
    return dest


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    """The project built once from a clean checkout, with the default params."""
    return build(tmp_path_factory.mktemp("built"))


@pytest.fixture
def built_copy(built: Path, tmp_path: Path) -> Path:
    return private_copy(built, tmp_path / "project")
