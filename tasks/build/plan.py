"""What the params make of the stage list, as plain data: for each stage its params sections, its
upstream stages, its inputs from outside the build and whether a plain `doit` builds it.

It is computed from the validated params only when the params file (or the code that reads it)
changed, and memoized, so a no-op build decides everything from the plan: it never imports the
params schema (pydantic costs a no-op run ~70 ms of its ~0.25 s).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Plan:
    name: str  # params.name: artifacts go to models/<name>/
    # stage: {"sections": {...}, "upstream": [...], "external": {key: path}, "default": bool, "unable": why}
    stages: dict

    def sections(self, stage: str) -> dict:
        return self.stages[stage]["sections"]

    def upstream(self, stage: str) -> list[str]:
        return self.stages[stage]["upstream"]

    def external(self, stage: str) -> dict[str, str]:
        return self.stages[stage]["external"]

    def unable(self, stage: str) -> str | None:
        """Why the stage cannot run with these params (its upstream is then not built for it)."""
        return self.stages[stage].get("unable")

    def default(self) -> list[str]:
        return [name for name, stage in self.stages.items() if stage["default"]]

    def to_json(self) -> dict:
        return asdict(self)


def make_plan(stages, params, paths) -> Plan:
    """Evaluate each stage's rules (its fields and its own special cases) against the params."""
    dump = params.model_dump(mode="json")
    plan = {}
    for stage in stages:
        outside = stage.external_inputs(params, paths) if stage.external_inputs else {}
        plan[stage.name] = {
            "sections": {key: dump[key] for key in stage.sections_of(params)},
            "upstream": list(stage.upstream_of(params)),
            "external": {key: str(path) for key, path in outside.items()},
            "default": stage.is_default(params),
            "unable": stage.unable(params) if stage.unable else None,
        }
    return Plan(params.name, plan)
