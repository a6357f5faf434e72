"""What a stage is to doit: its inputs, its fingerprint, its up-to-date check and its task dict.

A stage is stale when its fingerprint (params section, own code, library versions, upstream
content hashes) differs from the one stored in the `meta:` of its `.dvc` file, when doit holds no
record of building it (`doit forget`), or when its output folder no longer matches that record.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tasks import artifacts
from tasks.params import ParamsError, load_params
from tasks.paths import DOIT_DB, ROOT, Paths


@dataclass(frozen=True)
class Stage:
    name: str
    module: str  # the module holding run(params, paths, out, channel)
    doc: str
    upstream: tuple[str, ...]
    code: tuple[str, ...]  # modules under tasks/ whose source is part of the fingerprint
    libraries: tuple[str, ...]  # distributions whose versions are part of the fingerprint
    params: tuple[str, ...]  # params sections (top-level keys) the stage reads


PARAMS_ENV = "LAB_PARAMS"  # another params file (relative to the project), e.g. params/phi35-h100.yaml


@functools.cache
def project(root: Path = ROOT):
    """(Params, Paths) of the project, validated once per process."""
    params = load_params(root / os.environ.get(PARAMS_ENV, "params.yaml"))
    paths = Paths(root, params.name)
    try:
        paths.inside(params.data.path, "data.path")
    except ValueError as exc:
        raise ParamsError(str(exc)) from None
    return params, paths


@functools.cache
def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


@functools.cache
def _source_hash(module: str) -> str:
    return hashlib.sha256((ROOT / "tasks" / module).read_bytes()).hexdigest()[:16]


def upstream_of(stage: Stage, params) -> tuple[str, ...]:
    """Upstream stages; a synthetic base trains its tokenizer on the train split, other sources don't."""
    if stage.name == "base" and params.base.source not in ("synthetic", "tiny"):
        return ()
    return stage.upstream


def sections_of(stage: Stage, params) -> tuple[str, ...]:
    """Params sections in the fingerprint; a base from an Azure ML workspace also depends on which."""
    if stage.name == "base" and params.base.source == "azureml":
        return (*stage.params, "azure")
    return stage.params


def _external_inputs(stage: Stage, params, paths: Paths) -> dict:
    """Inputs from outside the build: the raw data file, a local base folder (by size and mtime)."""
    if stage.name == "data":
        data = paths.inside(params.data.path, "data.path")
        return {"data_file": hashlib.sha256(data.read_bytes()).hexdigest() if data.is_file() else "missing"}
    if stage.name == "base" and params.base.source == "local":
        folder = Path(params.base.path).expanduser()
        return {"local_base": artifacts.file_stats(folder) if folder.is_dir() else "missing"}
    return {}


def fingerprint(stage: Stage, params, paths: Paths) -> dict:
    """Everything a stage's output depends on, as a small JSON-able dict."""
    dump = params.model_dump(mode="json")
    return {
        "params": {key: dump[key] for key in sections_of(stage, params)},
        "code": {m: _source_hash(m) for m in stage.code},
        "libraries": {d: _version(d) for d in stage.libraries},
        "inputs": {u: artifacts.content_hash(paths.dvc_file(u)) for u in upstream_of(stage, params)},
        **_external_inputs(stage, params, paths),
    }


def diff_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two fingerprints."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += diff_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def save_values(task_name: str, values: dict) -> None:
    """Write a stage's doit record now: doit saves only when the whole run ends, so a killed run
    would otherwise forget every stage it finished."""
    from doit.dependency import JSONCodec, SqliteDB

    db = SqliteDB(str(project()[1].root / DOIT_DB), JSONCodec())
    db.get(task_name, "_values_:")  # loads the task's whole row, which dump() rewrites
    db.set(task_name, "_values_:", values)
    db.dump()


class UpToDate:
    """doit uptodate check; after a False, its repr says why (shown by `doit info`)."""

    def __init__(self, stage: Stage):
        self.stage = stage
        self.reason = "not checked yet"

    def __call__(self, task, values) -> bool:
        self.reason = self._why_stale(values)
        return self.reason is None

    def _why_stale(self, values: dict) -> str | None:
        params, paths = project()
        doc = artifacts.read_yaml(paths.dvc_file(self.stage.name))
        if not doc:
            return f"{paths.dvc_file(self.stage.name)} is missing"
        stored = (doc.get("meta") or {}).get("fingerprint") or {}
        changed = diff_keys(stored, fingerprint(self.stage, params, paths))
        if changed:
            return "changed: " + ", ".join(changed[:6])
        if "files" not in values:
            return "doit holds no record of building it (new checkout or `doit forget`)"
        if values.get("md5") != artifacts.content_hash(paths.dvc_file(self.stage.name)):
            return "its .dvc file names another version than the one built here (git checkout?)"
        out = paths.output(self.stage.name)
        why, current = artifacts.damage(paths.root, out, paths.dvc_file(self.stage.name), values["files"])
        if why is None and current != values["files"]:
            save_values(self.stage.name, {**values, "files": current})  # content verified: keep new stats
        return why

    def __repr__(self) -> str:
        return f"<{self.stage.name} is stale: {self.reason}>"


def make_task(stage: Stage) -> dict:
    """The doit task of a stage: ordering by task_dep, staleness by UpToDate, work in a child."""
    from tasks.runner import run_stage  # keeps this module importable without the UI layer

    try:
        params, paths = project()
    except ParamsError as exc:
        raise SystemExit(f"error: {exc}") from None
    return {
        "basename": stage.name,
        "doc": stage.doc,
        "actions": [(run_stage, [stage])],
        "task_dep": list(upstream_of(stage, params)),
        "targets": [str(paths.dvc_file(stage.name))],
        "uptodate": [UpToDate(stage)],
        "verbosity": 2,
    }
