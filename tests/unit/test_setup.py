"""`make setup` picks the onnxruntime builds for the machine (a GPU that nvidia-smi sees: CUDA),
takes an override either way, and installs from a wheelhouse alone when given one. Read from
`make -n` (what it would run) with a stand-in nvidia-smi on PATH; CI's own `make setup` runs the CPU
path for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _plan(tmp_path: Path, gpu: bool, *args: str) -> list[str]:
    """The pip lines `make setup` would run on a machine with or without a GPU."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\nexit {0 if gpu else 9}\n")  # 9: no driver, as on a CPU machine
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("DEVICE", None)
    out = subprocess.run(["make", "-n", "setup", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if "pip install" in line]


def test_the_gpu_decides_the_onnxruntime_builds_and_an_override_wins(tmp_path):
    assert any("-e '.[test,cpu]'" in line for line in _plan(tmp_path, gpu=False))
    assert any("-e '.[test,cuda]'" in line for line in _plan(tmp_path, gpu=True))
    assert any("-e '.[test,cpu]'" in line for line in _plan(tmp_path, True, "DEVICE=cpu"))
    assert any("-e '.[test,cuda]'" in line for line in _plan(tmp_path, False, "DEVICE=cuda"))


def test_a_wheelhouse_makes_every_install_offline(tmp_path):
    lines = _plan(tmp_path, False, "WHEELHOUSE=wh")
    assert len(lines) == 3 and all(f"--no-index --find-links {ROOT / 'wh'}" in line for line in lines)
    assert not any("--no-index" in line for line in _plan(tmp_path, False))


def test_each_device_gets_one_onnxruntime_and_the_base_none():
    """Both builds install the module `onnxruntime`: one environment must never get the two, and
    the genai build must be the one for the same runtime."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("onnxruntime")]
    extras = project["optional-dependencies"]
    names = {device: sorted(d.split("==")[0] for d in extras[device]) for device in ("cpu", "cuda")}
    assert names == {
        "cpu": ["onnxruntime", "onnxruntime-genai"],
        "cuda": ["onnxruntime-genai-cuda", "onnxruntime-gpu"],
    }


def test_the_users_lab_variables_do_not_steer_the_tests():
    """README suggests `LAB_PARAMS=params/tiny.yaml` for the tiny build; exported in the shell, it
    must not change what the tests build (tests/conftest.py clears every LAB_* variable)."""
    env = {**os.environ, "LAB_PARAMS": "params/tiny.yaml", "LAB_WAIT_FOR_LOCK": "1"}
    picked = "tests/unit/test_engine.py::test_the_package_follows_the_checkout_you_stand_in"
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", picked], cwd=ROOT, env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:]


def _make_lines(*args: str) -> list[str]:
    """What `make -n ARGS` would run, as a user's shell asks it: a `make test-fast VENV=...` that runs
    this test passes its variables down through MAKEFLAGS, which must not steer the dry run."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    out = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, check=True, env=env)
    return out.stdout.splitlines()


def test_system_torch_keeps_every_other_pin_and_links_only_torch_and_what_it_needs():
    lines = _make_lines("setup", "TORCH=system", "DEVICE=cuda")
    assert any("tasks/cli/system_torch.py" in line for line in lines)
    assert any(line.startswith("grep -v '^torch==' constraints.txt > .venv/constraints.txt") for line in lines)
    installs = [line for line in lines if "pip install" in line and "-c " in line]
    assert installs and all("-c .venv/constraints.txt" in line for line in installs)
    assert not any("system_torch" in line for line in _make_lines("setup", "DEVICE=cuda"))


def test_the_link_set_is_torch_and_its_installed_requirements():
    from tasks.cli.system_torch import closure, top_levels

    dists = closure()
    assert "torch" in dists and "pytest" not in dists and "doit" not in dists  # their commands stay in .venv/bin
    names = {entry.name for entry in top_levels(dists["torch"])}
    assert "torch" in names and any(n.endswith(".dist-info") for n in names)


def test_linked_packages_are_byte_compiled_where_they_live(tmp_path):
    """An image without .pyc files (PYTHONDONTWRITEBYTECODE=1) would have every stage compile torch
    again; setup compiles them once, into the folder imports through the link read."""
    from tasks.cli.system_torch import precompile

    real = tmp_path / "image" / "pkg"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("VALUE = 1\n")
    (tmp_path / "image" / "single.py").write_text("X = 2\n")
    links = tmp_path / "venv"
    links.mkdir()
    for name in ("pkg", "single.py"):
        (links / name).symlink_to(tmp_path / "image" / name)
    assert precompile(sorted(links.iterdir())) == 0
    assert [p.name.split(".")[0] for p in (real / "__pycache__").iterdir()] == ["__init__"]
    assert [p.name.split(".")[0] for p in (links / "__pycache__").iterdir()] == ["single"]
    (real / "broken.py").write_text("def (:\n")
    assert precompile([links / "pkg"]) == 1  # counted, not fatal


def test_a_cuda_wheelhouse_reads_no_pip_configuration_of_this_machine():
    """A machine's pip config may add a folder of CPU wheels (torch 2.13.0+cpu satisfies ==2.13.0)."""
    lines = _make_lines("wheelhouse", "DEVICE=cuda")
    downloads = [line for line in lines if "pip download" in line or "pip wheel" in line]
    assert len(downloads) == 4 and all(" --isolated " in line for line in downloads)
    assert any("torch==2.13.0" in line for line in downloads)
    system = [line for line in _make_lines("wheelhouse", "DEVICE=cuda", "TORCH=system") if "torch==2.13.0" in line]
    assert not system  # the GPU machine's own torch serves
