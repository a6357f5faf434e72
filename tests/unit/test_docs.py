"""The README leads to every docs page, and what the pages name exists: their links, the `doit`
commands they show, and the files of this repository they point to."""

from __future__ import annotations

import contextlib
import re

import pytest
from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain

from tasks.pipeline import BY_NAME
from tests.conftest import ROOT

PAGES = sorted((ROOT / "docs").glob("*.md"))
ALL = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "BENCHMARKS.md", *PAGES]
with contextlib.chdir(ROOT):  # doit reads its [tool.doit] table only from a file named pyproject.toml, here
    COMMANDS = set(DoitMain(ModuleTaskLoader({}), config_filenames=["pyproject.toml"]).get_cmds().to_dict())
TASKS = {*BY_NAME, "gates"}  # gates: a task once params set any
# Placeholders and things built at run time, not files of the repository.
GENERATED = ("models/", "logs/", "data/prepared", "wheelhouse", ".venv")


def test_the_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert PAGES and all(f"(docs/{page.name})" in readme for page in PAGES)


@pytest.mark.parametrize("page", ALL, ids=lambda p: p.name)
def test_every_link_command_and_path_a_page_names_exists(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not target.startswith(("http://", "https://")):
            assert (page.parent / target).exists(), f"{page.name}: link to {target}"
    # Commands as typed: in inline code (`doit status`) and at the start of a code block's line.
    typed = re.findall(r"`(?:\.venv/bin/)?doit ([a-z][a-z-]*)", text)
    typed += re.findall(r"^(?:\.venv/bin/)?doit ([a-z][a-z-]*)", text, flags=re.M)
    for command in typed:
        assert command in COMMANDS or command in TASKS, f"{page.name}: doit {command}"
    for path in re.findall(r"`((?:tasks|tests|benchmarks|params|docs|data)/[^`\s(]*)", text):
        path = path.rstrip(".,:;")
        if any(mark in path for mark in ("<", "*", "{", "...")) or path.startswith(GENERATED):
            continue
        module = path.rsplit(".", 1)[0] + ".py"  # tasks/ml/device.select: a name in tasks/ml/device.py
        assert (ROOT / path).exists() or (ROOT / module).is_file(), f"{page.name}: {path}"
