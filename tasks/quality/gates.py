"""`gates:` in params: conditions on the evaluate step's figures that a build must meet (Olive's
goals, as a build rule). A plain `doit` runs them after evaluate and fails naming the gate and the
figures; the artifacts stay built (fix the params or the gate, and only what changed rebuilds)."""

from __future__ import annotations

from tasks.errors import ParamsError
from tasks.quality import expr, figures


def compile_gates(gates: dict[str, str]) -> dict[str, expr.Expression]:
    """Parse every gate (a syntax error or an unknown metric names the gate)."""
    compiled = {name: expr.Expression(text, f"gates.{name}") for name, text in gates.items()}
    for gate in compiled.values():
        gate.check_names(figures.known_names([]))
    return compiled


def failures(gates: dict[str, str], values: dict) -> list[str]:
    """Why each gate the figures fail does not pass: `gates.awq_cost: ppl_awq <= 1.1 * ppl_base is
    false (ppl_awq 12.3, ppl_base 10.2)`."""
    found = []
    for name, gate in compile_gates(gates).items():
        try:
            passed = bool(gate(values))
        except expr.Missing as missing:
            found.append(f"gates.{name}: {gate.text}: no figure {missing} (did evaluate run?)")
            continue
        except (ArithmeticError, TypeError) as exc:
            raise ParamsError(f"gates.{name}: {gate.text}: {exc}") from None
        if not passed:
            found.append(f"gates.{name}: {gate.text} is false ({expr.figures(gate, values)})")
    return found


def adapter_values(paths, adapter: str) -> dict:
    """An adapter's figures by name, from the build's published metrics files."""
    from tasks.engine.artifacts import read_json
    from tasks.paths import step_name

    steps = {}
    for stage in ("quantize", "finetune", "export", "adapter", "evaluate"):
        step = step_name(stage, adapter) if "{adapter}" in paths.outputs[stage] else stage
        steps[stage] = read_json(paths.metrics(step)) or {}
    return figures.row(steps)


def check(gates: dict[str, str], paths) -> str | None:
    """Why the build fails its gates (every adapter's), or None."""
    lines = [
        f"{adapter}: {why}" for adapter in paths.adapters for why in failures(gates, adapter_values(paths, adapter))
    ]
    return ("quality gates failed (the artifacts are kept):\n  " + "\n  ".join(lines)) if lines else None
