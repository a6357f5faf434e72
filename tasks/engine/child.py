"""The process that runs one stage: `python -m tasks.engine.child <stage> <job.json>`.

File descriptor 1 becomes the event channel to the parent (JSON lines); everything else a library
prints, C code included, goes to the stage's log file, which the parent opened as our stderr. The
job names the module whose `run()` builds the output: the stage's own, or the one that runs it as
a remote job (the parent chose); this process stages, records and tracks the output either way.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from tasks.engine import artifacts, protocol, store
from tasks.errors import redact


def _take_over_stdout(job: dict) -> protocol.Channel:
    channel = protocol.Channel(os.dup(1), job)
    os.dup2(2, 1)  # library prints go to the log, not into the event stream
    sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", errors="replace")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_redacted)
    logging.getLogger("azure").setLevel(logging.WARNING)  # its HTTP lines name every URL and header
    return channel


def _redacted(record: logging.LogRecord) -> bool:
    """Log filter: the message with every URL's query string (SAS tokens) dropped."""
    record.msg, record.args = redact(record.getMessage()), None
    return True


PROFILE_ENV = "LAB_PROFILE"  # LAB_PROFILE=1 doit -s -a quantize: cProfile stats to logs/quantize.prof


def _profiled(run, log: Path):
    """`run`, under cProfile when LAB_PROFILE is set (where a GPU stage spends its minutes); the
    stats go beside the stage log, the top entries into it."""
    if not os.environ.get(PROFILE_ENV):
        return run

    def wrapper(*args):
        import cProfile
        import pstats

        with cProfile.Profile() as profile:
            result = run(*args)
        profile.dump_stats(log.with_suffix(".prof"))
        stats = pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative")
        stats.print_stats(60)
        stats.sort_stats("tottime").print_stats(40)
        return result

    return wrapper


def build_record(stage: str, out: Path, seconds: float, summary: dict, fingerprint: dict) -> dict:
    """The `meta:` of a stage's .dvc file: when, what it measured (its metrics), what from."""
    sizes = [size for size, _ in artifacts.file_stats(out).values()]
    numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    words = {k: v for k, v in summary.items() if isinstance(v, str)}  # e.g. the model version a label resolved to
    return {
        "stage": stage,
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metrics": {"seconds": round(seconds, 2), "bytes": sum(sizes), "files": len(sizes), **numbers},
        **({"details": words} if words else {}),
        "fingerprint": fingerprint,
    }


def _hold_to_planned_devices(fingerprint: dict, choices: dict) -> None:
    """Build on the devices the fingerprint says: a step planned for the CPU sees no GPU (auto then
    resolves to cpu in the stage too); one whose `auto` was resolved to CUDA fails here if this
    process has none. (An explicit `cuda` without one is the stage's own clear error.)"""
    from tasks.errors import StageError

    planned = {k: v for k, v in fingerprint.get("device", {}).items() if k != "dtype"}
    if planned and all(device == "cpu" for device in planned.values()):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif any(choices.get(k) == "auto" and v == "cuda" for k, v in planned.items()):
        import torch

        if not torch.cuda.is_available():
            raise StageError("device auto was resolved to cuda when this run planned, but this process sees none")


def main(step: str, job_file: str, process: str = "started for it") -> int:
    from tasks.params import Params
    from tasks.paths import Paths, split_step

    job = protocol.read_job(Path(job_file))
    channel = _take_over_stdout(job)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all")
    logging.getLogger("tasks").info(
        "stage %s: started (pid %d %s, CUDA_VISIBLE_DEVICES %s)", step, os.getpid(), process, visible
    )
    stage_name, adapter = split_step(step)
    # A stage of one adapter sees that adapter's params and folders as its own (its data, its finetune).
    params = Params.model_validate(job["params"]).for_adapter(adapter)
    paths = Paths(
        Path(job["root"]),
        params.name,
        job["outputs"],
        tuple(job["adapters"]),
        adapter,
        job.get("folders", {}),
        job.get("log_folder", "logs"),
    )
    out = paths.output(step)
    os.environ["LAB_STAGE"] = stage_name  # failpoints name the stage (tests/e2e/test_faults.py)
    protocol.stop_once_on_signals()  # Ctrl-C or SIGTERM: the cleanup below runs once, uninterrupted
    placed = False
    try:
        artifacts.failpoint("start")
        if job["executor"] == job["module"]:  # run here, not as a remote job
            _hold_to_planned_devices(job["fingerprint"], job.get("devices", {}))
        started = time.perf_counter()
        paths.models.mkdir(parents=True, exist_ok=True)  # stages' scratch folders go there; a trial's may be first
        run = importlib.import_module(job["executor"]).run
        with artifacts.staging(out) as tmp:
            summary = _profiled(run, paths.log(step))(params, paths, tmp, channel) or {}
        placed = True
        meta = build_record(step, out, time.perf_counter() - started, summary, job["fingerprint"])
        store.dvc_track(paths.root, out, meta, paths.canonical(step))
        if job.get("publish", True):
            store.publish_records(paths, step, meta, job["tracked_copies"])
        artifacts.failpoint("tracked")
    except Exception as exc:
        message, code = protocol.explain(exc, out, placed)
        channel.send("error", message=redact(message))
        return code
    logging.getLogger("tasks").info("stage %s: done", step)
    channel.send("summary", **summary)
    return 0


def as_spare() -> int:
    """A spare stage process (tasks/engine/spare.py): import what stages import, then build the
    step the parent writes on stdin, with its stderr going to the step's log from then on."""
    from tasks.engine.spare import WARM

    try:
        for name in WARM:
            importlib.import_module(name)
        order = sys.stdin.readline()
    except KeyboardInterrupt:  # Ctrl-C while it waited: the build stops, and nothing was started here
        return 130
    except Exception:  # noqa: BLE001  (a failed import fails the stage's own import again, in its log)
        order = sys.stdin.readline()
    if not order:
        return 0  # the build ended without needing it
    order = json.loads(order)
    log = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 2)
    os.close(log)
    return main(order["step"], order["job"], process="a spare")


if __name__ == "__main__":
    from tasks.engine.spare import SPARE_FLAG

    sys.exit(as_spare() if sys.argv[1:] == [SPARE_FLAG] else main(*sys.argv[1:]))
