"""What the params make of the stage list, as plain data: the steps (a stage, or a stage of one
adapter: `finetune:travel`), and for each its params sections, its upstream steps, its inputs from
outside the build and whether a plain `doit` builds it.

It is computed from the validated params only when the params file (or the code that reads it)
changed, and memoized, so a no-op build decides everything from the plan: it never imports the
params schema (pydantic costs a no-op run ~70 ms of its ~0.25 s).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tasks.paths import step_name


@dataclass(frozen=True)
class Plan:
    name: str  # params.name: artifacts go to models/<name>/
    # step: {"sections": {...}, "upstream": [...], "external": {key: path}, "devices": {name: auto|cpu|cuda},
    #        "default": bool, "unable": why, "caveats": [...]}
    stages: dict
    adapters: list[str] = field(default_factory=list)  # params order
    gates: dict[str, str] = field(default_factory=dict)  # params gates: checked after evaluate

    def sections(self, step: str) -> dict:
        return self.stages[step]["sections"]

    def upstream(self, step: str) -> list[str]:
        return self.stages[step]["upstream"]

    def external(self, step: str) -> dict[str, str]:
        return self.stages[step]["external"]

    def devices(self, step: str) -> dict[str, str]:
        """Where the step computes, as params choose (auto is resolved per machine: fingerprint.py)."""
        return self.stages[step].get("devices") or {}

    def unable(self, step: str) -> str | None:
        """Why the step cannot run with these params (its upstream is then not built for it)."""
        return self.stages[step].get("unable")

    def caveats(self, step: str) -> list[str]:
        return self.stages[step].get("caveats") or []

    def default(self) -> list[str]:
        """What a plain `doit` runs: the default steps, and the gates when params set any."""
        return [name for name, step in self.stages.items() if step["default"]] + (["gates"] if self.gates else [])

    def to_json(self) -> dict:
        return asdict(self)


def _upstream(stage, params, per_adapter: set[str], adapter: str | None) -> list[str]:
    """Upstream steps: an adapter's own step of a per-adapter stage, or every adapter's."""
    found = []
    for up in stage.upstream_of(params):
        if up not in per_adapter:
            found.append(up)
        else:
            found += [step_name(up, a) for a in ([adapter] if adapter else params.adapter_names)]
    return found


def _devices(stage, params) -> dict[str, str]:
    """The step's device choices; run as an Azure ML job (jobs.executor), auto is that compute's
    device: the compute is named, as the machine that decides the bytes."""
    choices = stage.devices(params) if stage.devices else {}
    if params.jobs.remote(stage.name):
        return {k: f"azureml:{params.jobs.compute}" if c == "auto" else c for k, c in choices.items()}
    return choices


def _step(stage, params, paths, per_adapter: set[str], adapter: str | None) -> dict:
    own, paths = params.for_adapter(adapter), paths.for_adapter(adapter)
    dump = own.model_dump(mode="json")
    outside = stage.external_inputs(own, paths) if stage.external_inputs else {}
    return {
        "sections": {key: dump[key] for key in stage.sections_of(own)} | (stage.derived(own) if stage.derived else {}),
        "upstream": _upstream(stage, own, per_adapter, adapter),
        "external": {key: str(path) for key, path in outside.items()},
        "devices": _devices(stage, own),
        "default": stage.is_default(own),
        "unable": stage.unable(own) if stage.unable else None,
        "caveats": list(stage.caveats(own)) if stage.caveats else [],
    }


def make_plan(stages, params, paths) -> Plan:
    """Evaluate each stage's rules (its fields and its own special cases) against the params, once
    per adapter for a stage of each adapter (with that adapter's params: params.for_adapter)."""
    per_adapter = {stage.name for stage in stages if stage.per_adapter}
    plan = {}
    for stage in stages:
        for adapter in params.adapter_names if stage.per_adapter else [None]:
            plan[step_name(stage.name, adapter)] = _step(stage, params, paths, per_adapter, adapter)
    return Plan(params.name, plan, params.adapter_names, dict(params.gates))
