"""Parent side of a stage: start the child, draw its progress, turn its outcome into doit's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from doit.exceptions import TaskFailed

from tasks import artifacts, ui
from tasks.child import die_with_parent
from tasks.stage import Stage, fingerprint, project, save_values

# Offline by default: nothing may reach a model hub unless a stage asks for it (base, source: hf).
CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DVC_NO_ANALYTICS": "1",
    "PYTHONUNBUFFERED": "1",
}


def _write_job(stage: Stage, params, paths, fp: dict):
    job = paths.log(stage.name).with_suffix(".job.json")
    job.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "root": str(paths.root),
        "module": stage.module,
        "fingerprint": fp,
        "params": params.model_dump(mode="json"),
    }
    job.write_text(json.dumps(body, indent=1))
    return job


def _follow(proc: subprocess.Popen, stage: str) -> dict:
    """Render the child's events until it exits; return the last summary or error."""
    outcome: dict = {}
    with ui.StageProgress(stage) as bars:
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = event.pop("event", None)
            if kind == "progress":
                bars.update(event["bar"], event["done"], event.get("total"))
            elif kind == "table":
                bars.table(event["title"], event["columns"], event["rows"])
            elif kind in ("summary", "error"):
                outcome = {"kind": kind, **event}
    return outcome


def _run_child(stage: Stage, job, paths, env: dict) -> tuple[int, dict, bool]:
    """Run the child to its end; on Ctrl-C let it clean up first. Returns (rc, outcome, interrupted)."""
    with paths.log(stage.name).open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tasks.child", stage.name, str(job)],
            stdout=subprocess.PIPE,
            stderr=log_file,
            cwd=paths.root,
            env=env,
            text=True,
            preexec_fn=die_with_parent,
        )
        try:
            outcome = _follow(proc, stage.name)
            return proc.wait(), outcome, False
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)  # a no-op if the terminal already sent it to the group
            proc.wait()
            return proc.returncode, {}, True


def run_stage(stage: Stage, task):
    """doit action: build one stage in a child process; return values doit stores for the task."""
    params, paths = project()
    fp = fingerprint(stage, params, paths)
    job = _write_job(stage, params, paths, fp)
    log = paths.log(stage.name)
    env = {**os.environ, **CHILD_ENV}
    if stage.name == "base" and params.base.source == "hf":
        env.pop("HF_HUB_OFFLINE")
    started = time.perf_counter()
    rc, outcome, interrupted = _run_child(stage, job, paths, env)
    if interrupted:
        return TaskFailed(f"interrupted (Ctrl-C): {stage.name} stopped, its partial output removed\n  log: {log}")
    if rc != 0 or outcome.get("kind") != "summary":
        reason = outcome.get("message") or f"the stage process exited with code {rc}"
        return TaskFailed(f"{reason}\n  log: {log}")
    files = artifacts.file_stats(paths.output(stage.name))
    values = {
        "files": files,
        "size": sum(size for size, _ in files.values()),
        "seconds": round(time.perf_counter() - started, 2),
        "summary": {k: v for k, v in outcome.items() if k != "kind"},
    }
    save_values(task.name, values)
    return values
