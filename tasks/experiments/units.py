"""The steps of a sweep's trials, each built once: a unit is a step with its params sections, device
choices, outside inputs and upstream units; trials whose step has all of these alike share one
unit. Where a unit comes from is decided by its fingerprint when its upstream is known: the
workspace (the build params.yaml makes already holds it), DVC's run-cache, or a build.

A unit the workspace does not hold goes in a folder of its own, `models/experiments/<sweep>/
<step>-<id>/`, so trials never overwrite the workspace or each other and may run at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

from tasks.engine import artifacts, store
from tasks.engine.fingerprint import fingerprint
from tasks.engine.plan import make_plan
from tasks.errors import ParamsError
from tasks.paths import Paths, split_step
from tasks.pipeline import BY_NAME, OUTPUTS, STAGES

EXPERIMENTS = "models/experiments"  # <sweep>.json (git-tracked) and <sweep>/ (the trials' own builds)
NOT_IN_SWEEPS = ("register",)  # publishing is not an experiment


@dataclass
class Unit:
    step: str
    ident: str
    params: object  # the first trial's Params (every trial sharing the unit agrees on what it reads)
    plan: object
    upstream: dict[str, str]  # upstream step: its unit's ident
    trials: list[str] = field(default_factory=list)
    # Known once its upstream is: where it is, its fingerprint and content hash, how it came.
    folder: str | None = None  # relative to the root; the workspace's own for a unit it holds
    fingerprint: dict | None = None
    md5: str | None = None
    how: str = "pending"  # workspace | cached | built | failed | skipped
    seconds: float = 0.0
    started: str | None = None  # when this sweep started building it (steps of trials run at once)
    ended: str | None = None
    metrics: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def stage(self):
        return BY_NAME[split_step(self.step)[0]]

    @property
    def label(self) -> str:
        return f"{self.step.replace(':', '.')}-{self.ident[:8]}"


def _ident(step: str, found, upstream: dict[str, str]) -> str:
    what = [step, found.sections(step), found.devices(step), found.external(step), upstream]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def unit_graph(root, trials: dict[str, object]) -> tuple[dict[str, Unit], dict[str, dict[str, str]]]:
    """({ident: unit} in build order, {trial: {step: ident}}) for trials {name: Params}."""
    units: dict[str, Unit] = {}
    steps_of: dict[str, dict[str, str]] = {}
    for name, params in trials.items():
        paths = Paths(root, params.name, OUTPUTS, tuple(params.adapter_names))
        found = make_plan(STAGES, params, paths)
        steps_of[name] = {}
        for step in found.stages:
            if split_step(step)[0] in NOT_IN_SWEEPS:
                continue
            if found.unable(step):
                raise ParamsError(f"trial {name}: {step} cannot be built: {found.unable(step)}")
            upstream = {u: steps_of[name][u] for u in found.upstream(step)}
            ident = _ident(step, found, upstream)
            unit = units.setdefault(ident, Unit(step, ident, params, found, upstream))
            unit.trials.append(name)
            steps_of[name][step] = ident
    return units, steps_of


def base_paths(root, unit: Unit, units: dict[str, Unit], sweep: str) -> Paths:
    """The unit's Paths: its upstream units where they are, its logs in the sweep's log folder."""
    params = unit.params
    folders = {step: units[i].folder for step, i in unit.upstream.items() if units[i].folder}
    paths = Paths(root, params.name, OUTPUTS, tuple(params.adapter_names), folders=folders)
    folders = {k: v for k, v in folders.items() if root / v != paths.canonical(k)}
    return replace(paths, folders=folders, log_folder=f"logs/experiments/{sweep}/{unit.label}")


def own_folder(paths: Paths, unit: Unit, sweep: str) -> Paths:
    """Paths placing the unit in the sweep's folder for it (the leaf keeps the workspace's name)."""
    leaf = paths.canonical(unit.step).name
    return replace(paths, folders={**paths.folders, unit.step: f"{EXPERIMENTS}/{sweep}/{unit.label}/{leaf}"})


def _recorded_fingerprint(dvc_file) -> dict | None:
    return ((artifacts.read_yaml(dvc_file) or {}).get("meta") or {}).get("fingerprint")


def locate(repo, root, unit: Unit, units: dict[str, Unit], sweep: str, known: dict | None = None):
    """Where the unit would come from, without touching anything: ("workspace" | "cached" | "build",
    its fingerprint, its content hash if known). `known`: {ident: content hash} the upstream units
    would have (a dry run); else they are in place and their .dvc files say."""
    paths = base_paths(root, unit, units, sweep)
    inputs = None
    if known is not None:
        inputs = {step: known.get(i) for step, i in unit.upstream.items()}
        if any(v is None for v in inputs.values()):
            return "build", None, None  # an upstream unit is built first: its content is not known yet
    fp = fingerprint(unit.stage, unit.step, unit.plan, paths, inputs)
    canonical = paths.dvc_file(unit.step)
    if _recorded_fingerprint(canonical) == fp:
        return "workspace", fp, store.content_hash(canonical)
    own = own_folder(paths, unit, sweep).dvc_file(unit.step)
    if _recorded_fingerprint(own) == fp:
        return "cached", fp, store.content_hash(own)
    found = store.entries(repo, fp, paths.canonical(unit.step).relative_to(root).as_posix())
    usable = [doc for doc in found if repo.cache.local.exists(doc["outs"][0]["md5"])]
    return ("cached", fp, usable[0]["outs"][0]["md5"]) if usable else ("build", fp, None)


def predict(repo, root, units: dict[str, Unit], sweep: str) -> dict[str, str]:
    """{ident: workspace | cached | build} for every unit, before anything runs."""
    known, how = {}, {}
    for ident, unit in units.items():
        how[ident], _, known[ident] = locate(repo, root, unit, units, sweep, known)
    return how
