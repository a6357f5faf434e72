"""Run one stage as an Azure ML command job (params jobs.executor: {<stage>: azureml}).

The runner names this module as the stage process's executor in place of the stage's own module:
its `run()` builds into the same staging folder, so the result is checked, renamed into place and
tracked by DVC exactly like a local build. The job:
- code: a snapshot of tasks/, pyproject.toml, the raw data file and the job file (params and
  fingerprint), uploaded under its content hash;
- inputs: each upstream artifact, uploaded once under its DVC content hash;
- command: `python -m tasks.azureml.job_entry <stage>`, which calls the stage's own `run()`;
- output: one folder on the default datastore, downloaded back when the job completes.
While it runs, its std_log.txt is read from the artifact store: the stage's events drive the local
progress bars and every line goes to the stage log. Ctrl-C or SIGTERM cancels the job.

A submitted job is recorded (`logs/<stage>.azureml-job.json`) until it ends, so a run killed
outright (SIGKILL, OOM, a dropped SSH session) leaves no job billing unseen: the next run of the
stage reattaches to it if it was built from the same inputs (no second job), and cancels it if the
inputs changed since.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import time
import uuid
from pathlib import Path

from tasks.azureml import client as azure
from tasks.engine import protocol
from tasks.engine.protocol import CHILD_ENV, JOB_FILE
from tasks.errors import StageError, redact

DONE = {"Completed", "Failed", "Canceled", "NotResponding"}
ARTIFACT_STORE = "workspaceartifactstore"
SNAPSHOT_FILES = ("tasks", "pyproject.toml", "dodo.py")
ENTRY = "tasks.azureml.job_entry"  # what the job runs on the compute


def _snapshot(paths, params, job: dict, scratch: Path) -> Path:
    """The code snapshot folder: the project's code and raw data, and the job file."""
    import shutil

    snap = scratch / "code"
    for rel in SNAPSHOT_FILES:
        src = paths.root / rel
        if src.is_dir():
            shutil.copytree(src, snap / rel, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            (snap / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, snap / rel)
    for rel in {*(own.data for own in params.adapters.values()), *params.calibration_files()}:
        data = paths.inside(rel, "a data file")
        (snap / data.relative_to(paths.root)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(data, snap / data.relative_to(paths.root))
    protocol.write_job(snap / JOB_FILE, job)
    return snap


def _folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:32]


def _upload_once(blobs, folder: Path, prefix: str, progress) -> str:
    """Upload a folder under a content-addressed prefix unless a complete copy is there already
    (the marker is written last, so an interrupted upload is redone)."""
    marker = f"{prefix}.complete"  # beside the folder, not in it
    if not blobs.container.get_blob_client(marker).exists():
        blobs.upload_folder(folder, prefix, progress)
        blobs.container.upload_blob(marker, b"", overwrite=True)
    return blobs.uri(prefix)


def _input_name(step: str) -> str:
    """A job input's name for a step (`finetune:travel` -> `finetune__travel`): Azure ML input names
    are identifiers; the step itself goes on the command line."""
    return step.replace(":", "__").replace("-", "_")


def _command_job(stage: str, params, inputs: dict[str, str], code: str, out: str, name: str):
    from azure.ai.ml import Input, Output, command

    flags = " ".join(f"--input {u}=${{{{inputs.{_input_name(u)}}}}}" for u in inputs)
    return command(
        name=name,
        display_name=f"{params.name} {stage}",
        experiment_name=params.jobs.experiment,
        # The snapshot is an input (mounted read-only), so every byte goes through the lab's own uploads.
        command=f"cd ${{{{inputs.code}}}} && python -m {ENTRY} {stage} --out ${{{{outputs.out}}}} {flags}",
        inputs={"code": Input(type="uri_folder", path=code, mode="ro_mount")}
        | {_input_name(u): Input(type="uri_folder", path=uri, mode="ro_mount") for u, uri in inputs.items()},
        outputs={"out": Output(type="uri_folder", path=out, mode="rw_mount")},
        environment=params.jobs.environment,
        compute=params.jobs.compute,
        environment_variables={**CHILD_ENV, "PYTHONDONTWRITEBYTECODE": "1"},
        tags={"lab_stage": stage, "lab_build": params.name},
    )


class LogFollower:
    """Reads a running job's std_log.txt from the artifact store, from where it left off."""

    def __init__(self, blobs, job_name: str, channel, log):
        self.blob = blobs.container.get_blob_client(f"ExperimentRun/dcid.{job_name}/user_logs/std_log.txt")
        self.channel, self.log = channel, log
        self.offset, self.partial, self.lines, self.outcome = 0, b"", [], {}

    def poll(self) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            size = self.blob.get_blob_properties().size
            if size <= self.offset:
                return
            data = self.blob.download_blob(offset=self.offset, length=size - self.offset).readall()
        except ResourceNotFoundError:
            return  # the job has not written its log yet
        self.offset += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        for raw in complete:
            self._line(raw.decode("utf-8", errors="replace"))

    def _line(self, line: str) -> None:
        line = redact(line)
        self.log.write(f"[job] {line}\n")
        kind, event = protocol.event(line)
        if kind is None:
            self.lines = [*self.lines[-19:], line]  # the excerpt shown when the job fails
            return
        if kind in ("progress", "table"):
            self.channel.send(kind, **event)
        elif kind in ("summary", "error"):
            self.outcome = {"kind": kind, **event}


def _wait(client, name: str, follower: LogFollower, poll_seconds: float) -> str:
    while True:
        status = client.jobs.get(name).status
        follower.poll()
        if status in DONE:
            follower.poll()
            return status
        time.sleep(poll_seconds)


def _wait_or_cancel(client, name: str, follower: LogFollower, poll_seconds: float, record: Path) -> str:
    previous = protocol.stop_once_on_signals()
    try:
        status = _wait(client, name, follower, poll_seconds)
    except KeyboardInterrupt:
        client.jobs.begin_cancel(name)
        record.unlink(missing_ok=True)
        logging.getLogger("tasks").info("cancelled Azure ML job %s", name)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    record.unlink(missing_ok=True)  # ended: nothing left to reattach to
    return status


def _inputs_key(job: dict) -> str:
    return hashlib.sha256(json.dumps(job["fingerprint"], sort_keys=True).encode()).hexdigest()


def _earlier_job(client, record: Path, key: str) -> dict | None:
    """The job an interrupted run left (its record), if it is worth reattaching to: same inputs and
    not failed or cancelled. A job still running on other inputs is cancelled: its result would be
    stale."""
    from azure.core.exceptions import ResourceNotFoundError

    if not record.is_file():
        return None
    earlier = json.loads(record.read_text())
    try:
        status = client.jobs.get(earlier["job"]).status
    except ResourceNotFoundError:
        status = "Canceled"
    log = logging.getLogger("tasks")
    if earlier["inputs"] != key and status not in DONE:
        client.jobs.begin_cancel(earlier["job"])
        log.info("cancelled Azure ML job %s, left running by an interrupted run on other inputs", earlier["job"])
    if earlier["inputs"] != key or status in ("Failed", "Canceled", "NotResponding"):
        record.unlink()
        return None
    log.info("reattached to Azure ML job %s (%s), left by an interrupted run", earlier["job"], status)
    return earlier


def _require(params) -> None:
    azure.require_workspace(params.azure, "a stage with executor azureml")
    missing = [f"jobs.{k}" for k in ("compute", "environment") if not getattr(params.jobs, k)]
    if missing:
        raise StageError(
            f"params.yaml: {', '.join(missing)} not set: an azureml stage runs on a compute cluster in an environment"
        )


def run(params, paths, out: Path, channel) -> dict:
    """Submit the stage named by the channel's job as a command job, follow it to the end, and
    download its output into `out`."""
    import tempfile

    job = {**channel.job, "executor": channel.job["module"]}  # on the compute: the stage's own run()
    stage = job["stage"]
    _require(params)
    paths.models.mkdir(parents=True, exist_ok=True)
    with azure.explained(f"running {stage} as an Azure ML job"):
        with tempfile.TemporaryDirectory(prefix=f".{stage.split(':')[0]}-", dir=paths.models) as scratch:
            return _follow_to_the_end(stage, params, paths, out, channel, job, Path(scratch))


def _submit(stage: str, params, paths, channel, job: dict, scratch: Path, client, blobs, record: Path, key: str):
    """Upload what the job reads (once per content), submit it, record it; returns (name, output prefix)."""
    from tasks.engine.store import content_hash

    progress = lambda done, total: channel.progress("upload", done, total)  # noqa: E731
    snap = _snapshot(paths, params, job, scratch)
    code = _upload_once(blobs, snap, f"lab-code/{_folder_hash(snap)}", progress)
    inputs = {}
    for u in job["upstream"]:
        content = content_hash(paths.dvc_file(u)).removesuffix(".dir")
        inputs[u] = _upload_once(blobs, paths.output(u), f"lab-artifacts/{content}", progress)
    name = f"lab-{params.name}-{stage}-{uuid.uuid4().hex[:10]}".lower()
    name = name.replace(".", "-").replace("_", "-").replace(":", "-")
    out_prefix = f"lab-outputs/{name}/out"
    client.jobs.create_or_update(_command_job(stage, params, inputs, code, blobs.uri(out_prefix), name))
    record.write_text(json.dumps({"job": name, "inputs": key, "out": out_prefix}))
    logging.getLogger("tasks").info("submitted Azure ML job %s (experiment %s)", name, params.jobs.experiment)
    return name, out_prefix


def _follow_to_the_end(stage, params, paths, out: Path, channel, job: dict, scratch: Path) -> dict:
    import sys

    client = azure.ml_client(params.azure)
    blobs = azure.Blobs.of_datastore(client)
    record, key = paths.log(stage).with_suffix(".azureml-job.json"), _inputs_key(job)
    earlier = _earlier_job(client, record, key)
    if earlier:
        name, out_prefix = earlier["job"], earlier["out"]
    else:
        name, out_prefix = _submit(stage, params, paths, channel, job, scratch, client, blobs, record, key)
    follower = LogFollower(azure.Blobs.of_datastore(client, ARTIFACT_STORE), name, channel, sys.stderr)
    status = _wait_or_cancel(client, name, follower, params.jobs.poll_seconds, record)
    if status != "Completed" or follower.outcome.get("kind") != "summary":
        remote = follower.outcome.get("message") or "no error reported by the stage"
        excerpt = "\n    ".join(follower.lines[-8:])
        raise StageError(f"Azure ML job {name} {status.lower()}: {remote}\n  job log (last lines):\n    {excerpt}")
    if blobs.download_folder(out_prefix, out, lambda d, t: channel.progress("download", d, t)) == 0:
        raise StageError(f"Azure ML job {name} completed but wrote nothing to {blobs.uri(out_prefix)}")
    return {k: v for k, v in follower.outcome.items() if k != "kind"}
