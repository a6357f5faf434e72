"""Fault injection: a stage or the whole `doit` run SIGKILLed at points inside every stage.

After each kill the next `doit` must re-run the interrupted stage (or, if it had fully finished and
been recorded, verify and keep it), never an earlier stage, never use a partial artifact, and leave no temporary
folders. The default run covers every kill point on one stage; `make faults` runs the full matrix
(every stage x every point) and FAULTS.md records its counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.pipeline import default_tasks
from tests.conftest import PLAIN, as_in_a_terminal, build, doit, edit_params, private_copy

pytestmark = pytest.mark.slow

ALL = default_tasks()  # the default build's steps, in build order
# A params edit that makes exactly this step (and what follows it) stale.
STALE = {
    "data:travel": ("seed: 42", "seed: 43"),
    "base": ("seed: 1234", "seed: 99"),
    "quantize": ("max_calib_seq_len: 512", "max_calib_seq_len: 256"),
    "finetune:travel": ("max_steps: 10", "max_steps: 11"),
    "export": ("accuracy_level: 4", "accuracy_level: 1"),
    "smoke:travel": ("max_new_tokens: 64", "max_new_tokens: 16"),
    "evaluate:travel": ("match_tokens: 8", "match_tokens: 4"),
}


def _make_stale(project: Path, step: str) -> None:
    if step == "adapter:travel":  # no params: its code changes (it writes the same bytes again)
        with (project / "tasks/stages/adapter.py").open("a") as f:
            f.write("# reviewed\n")
    else:
        edit_params(project, *STALE[step])


def _failpoint(step: str, point: str) -> str:
    """LAB_FAILPOINT names the stage (tasks/engine/artifacts.py), whichever adapter's step runs."""
    return f"{step.split(':')[0]}:{point}"


# Kill points inside a stage (tasks/engine/artifacts.py failpoint): before any work, outputs written but
# not in place, in place but not tracked, `dvc add` done but the record not written, all recorded.
CHILD_POINTS = ["start", "staged", "renamed", "dvc-added", "tracked"]
PARENT_POINTS = ["staged:parent", "tracked:parent"]  # the doit process itself is killed
FULL = os.environ.get("LAB_FAULT_MATRIX") == "1"
KILL_AFTER = {"data:travel": 0.3, "smoke:travel": 0.5}  # seconds into the stage process; these two finish in ~1.5 s
# The default run covers every point on this stage: quick, and nothing after it (`make faults`: all).
CHEAP = ["smoke:travel"]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A project built with small quantize/finetune budgets, so that kills and recoveries are quick."""
    return build(
        tmp_path_factory.mktemp("faults"),
        ("max_calib_samples: 32 ", "max_calib_samples: 16 "),
        ("max_steps: 100", "max_steps: 10"),
    )


@pytest.fixture
def project(small: Path, tmp_path: Path) -> Path:
    return private_copy(small, tmp_path / "p")


def _leftovers(project: Path) -> list[str]:
    return (
        [str(p) for p in project.rglob(".tmp-*")]
        + [str(p) for p in project.rglob(".old-*")]
        + [str(p) for p in (project / "models/tiny").glob(".*-*") if p.is_dir()]
    )


def _recover(project: Path, expected: list[str], restored: tuple[str, ...] = ()) -> None:
    run = doit(project)
    assert run.returncode == 0, run.output
    assert (run.ran, run.restored) == (expected, list(restored)), run.output
    again = doit(project)
    assert again.ran == again.restored == []
    assert not _leftovers(project)


def _after(step: str) -> list[str]:
    """The steps a change to `step` makes stale after it (evaluate reads export, not smoke's answers;
    the adapter file is rebuilt with the same bytes)."""
    return [] if step.startswith(("smoke", "adapter")) else ALL[ALL.index(step) + 1 :]


def _cases(points: list[str]) -> list[tuple[str, str]]:
    stages = ALL if FULL else CHEAP
    return [(s, p) for s in stages for p in points]


@pytest.mark.parametrize(("stage", "point"), _cases(CHILD_POINTS + PARENT_POINTS))
def test_kill_inside_a_stage(project, stage, point):
    _make_stale(project, stage)
    killed = doit(project, env={"LAB_FAILPOINT": _failpoint(stage, point)})
    # SIGKILL to the stage process: the stage fails (exit 1); to doit itself: killed by the signal.
    assert killed.returncode == (-signal.SIGKILL if point.endswith("parent") else 1), killed.output
    later = _after(stage)
    # A stage killed before its artifact was complete and recorded (.dvc meta and run-cache entry)
    # is re-run, whatever it had written; one killed after is hash-checked against DVC's cache
    # and kept (restored), not redone.
    if point.startswith("tracked"):
        _recover(project, later, restored=(stage,))
    else:
        _recover(project, [stage, *later])


# evaluate follows the adapter file, not smoke; smoke follows the adapter file, which no params edit changes
@pytest.mark.parametrize("stage", [s for s in ALL[1:-1] if "smoke" not in s] if FULL else ["finetune:travel"])
def test_killed_run_keeps_the_stages_it_finished(project, stage):
    """doit is killed as `stage` starts; the stage before it, finished in that run, is not redone."""
    before = ALL[ALL.index(stage) - 1]
    _make_stale(project, before)
    killed = doit(project, env={"LAB_FAILPOINT": _failpoint(stage, "start:parent")})
    assert killed.returncode == -signal.SIGKILL and before in killed.ran
    _recover(project, _after(before))  # what the edit made stale, less the stage that finished


@pytest.mark.parametrize("stage", ALL if FULL else ["quantize"])
def test_kill_while_the_stage_works(project, stage):
    """SIGKILL to the stage process halfway through its work (timed from its start)."""
    _make_stale(project, stage)
    proc, pid = _start(project, stage)
    time.sleep(KILL_AFTER.get(stage, 1.0))
    os.kill(pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output
    _recover(project, [stage, *_after(stage)])


def _wait_for_stage(stage: str, parent: int, deadline: float) -> int:
    """The PID of the `python -m tasks.engine.child <stage>` process that doit process `parent` started."""
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == parent and b"tasks.engine.child" in argv and stage.encode() in argv:
                return int(entry.name)
        time.sleep(0.05)
    raise AssertionError(f"stage {stage} never started")


def _start(project: Path, stage: str, env: dict | None = None) -> tuple[subprocess.Popen, int]:
    """Start `doit` in its own process group and wait until `stage`'s process runs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "doit"],
        cwd=project,
        text=True,
        start_new_session=True,
        preexec_fn=as_in_a_terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **PLAIN, **(env or {})},
    )
    return proc, _wait_for_stage(stage, proc.pid, deadline=time.monotonic() + 120)


STOPS = {
    "Ctrl-C": lambda pid: os.killpg(pid, signal.SIGINT),  # what a terminal sends: the whole process group
    "SIGTERM to the group": lambda pid: os.killpg(pid, signal.SIGTERM),  # `timeout`, a service manager
    "SIGTERM to doit": lambda pid: os.kill(pid, signal.SIGTERM),  # `kill`: also test_azure's SIGTERM case
}


# The default run: Ctrl-C (SIGTERM takes the same handler: tasks/engine/protocol.py; `make faults`: all three).
@pytest.mark.parametrize("stop", list(STOPS) if FULL else list(STOPS)[:1])
def test_ctrl_c_or_sigterm_stops_the_stage_and_removes_its_partial_output(project, stop):
    before = (project / "models/tiny/awq.dvc").read_text()
    edit_params(project, *STALE["quantize"])
    proc, _ = _start(project, "quantize")
    time.sleep(1.5)
    STOPS[stop](proc.pid)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output
    assert "interrupted (Ctrl-C or SIGTERM): quantize stopped, its partial output removed" in output
    assert (project / "models/tiny/awq.dvc").read_text() == before
    assert not _leftovers(project)
    _recover(project, ALL[ALL.index("quantize") :])


def test_second_run_refuses_while_one_builds_or_waits_if_asked(project):
    edit_params(project, *STALE["quantize"])
    first, _ = _start(project, "quantize")
    holder = f"another doit run is building in this checkout (pid {first.pid}, running since"
    # Every command that writes, under any reporter, is refused while the build runs.
    for args in [(), ("-r", "json"), ("forget", "smoke"), ("push",), ("pull",)]:
        second = doit(project, *args)
        assert second.returncode == 3 and second.ran == [] and holder in second.output, (args, second.output)
    waiting = doit(project, env={"LAB_WAIT_FOR_LOCK": "1"})  # returns once the first run is done
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert waiting.returncode == 0 and waiting.ran == [] and "every stage is up to date" in waiting.output
    assert f"waiting for the doit run building in this checkout (pid {first.pid}" in waiting.output
