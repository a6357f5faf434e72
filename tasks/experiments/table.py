"""A sweep's results as rows: one per trial (and adapter), with only the params that differ, the
key figures, their change against the current build, whether the trial meets `--where` and the
params' gates (feasible), and whether no other feasible trial beats it on quality, size and
speed at once (the Pareto front). Sorted on several keys; shown as a table, JSON, CSV or Markdown.
"""

from __future__ import annotations

import csv
import io
import json

from tasks.errors import ParamsError
from tasks.quality import expr, figures
from tasks.quality.gates import failures


def swept_keys(doc: dict) -> list[str]:
    """The params keys whose value differs between the sweep's trials."""
    trials = list(doc["trials"].values())
    keys = dict.fromkeys(k for t in trials for k in t.get("overrides", {}))
    return [k for k in keys if len({json.dumps(t["overrides"].get(k)) for t in trials}) > 1] or list(keys)


def rows(doc: dict, current: dict[str, dict]) -> list[dict]:
    """A row per trial and adapter: trial, adapter, status, params (swept keys), metrics, delta
    (against `current`: {adapter: figures of the workspace's build})."""
    keys = swept_keys(doc)
    found = []
    for name, trial in doc["trials"].items():
        by_adapter = trial.get("metrics") or {"": {}}
        for adapter, values in by_adapter.items():
            now = current.get(adapter, {})
            delta = {k: round(v - now[k], 6) for k, v in values.items() if isinstance(now.get(k), (int, float))}
            found.append(
                {
                    "trial": name,
                    "adapter": adapter,
                    "status": trial.get("status", "pending"),
                    "params": {k: trial["overrides"].get(k) for k in keys},
                    "metrics": values,
                    "delta": delta,
                    "seconds": trial.get("seconds"),
                    "error": trial.get("error"),
                    "log": trial.get("log"),
                }
            )
    return found


def _sort_keys(text: str, known: list[str]) -> list[tuple[str, bool]]:
    """`ppl,-decode_tok_s` -> [(ppl, ascending), (decode_tok_s, descending)]."""
    keys = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name = part.lstrip("+-")
        expr.Expression(name, "--sort").check_names(known)
        keys.append((name, not part.startswith("-")))
    return keys


def judge(found: list[dict], where: str | None, gates: dict[str, str]) -> list[dict]:
    """Mark each row feasible (done, meets --where and every gate) with why not, and on the
    Pareto front of the feasible rows."""
    known = figures.known_names([r["metrics"] for r in found])
    condition = expr.Expression(where, "--where") if where else None
    if condition:
        condition.check_names(known)
    for row in found:
        why = [] if row["status"] == "done" else [row["status"]]
        if condition and not why:
            try:
                if not condition(row["metrics"]):
                    why.append(f"--where ({expr.figures(condition, row['metrics'])})")
            except expr.Missing as missing:
                why.append(f"no figure {missing}")
        why += failures(gates, row["metrics"]) if not why else []
        row["feasible"], row["infeasible_because"] = not why, why
    _pareto([r for r in found if r["feasible"]])
    return found


def _better(a: dict, b: dict) -> bool:
    """Whether a dominates b: no worse on every Pareto figure and better on one."""
    strictly = False
    for name in figures.PARETO:
        x, y = a[name], b[name]
        if name in figures.HIGHER_IS_BETTER:
            x, y = -x, -y
        if x > y:
            return False
        strictly |= x < y
    return strictly


def _pareto(feasible: list[dict]) -> None:
    scored = [r for r in feasible if all(isinstance(r["metrics"].get(n), (int, float)) for n in figures.PARETO)]
    for row in feasible:
        row["pareto"] = row in scored and not any(_better(o["metrics"], row["metrics"]) for o in scored if o is not row)


def ordered(found: list[dict], sort: str | None) -> list[dict]:
    """Rows sorted on several keys (default: ppl); feasible ones first, rows lacking a key last."""
    keys = _sort_keys(sort or "ppl", figures.known_names([r["metrics"] for r in found]))
    result = list(found)
    for name, ascending in reversed(keys):
        present = [r for r in result if isinstance(r["metrics"].get(name), (int, float))]
        absent = [r for r in result if r not in present]
        result = sorted(present, key=lambda r: r["metrics"][name], reverse=not ascending) + absent
    return sorted(result, key=lambda r: not r.get("feasible", True))


def columns(found: list[dict]) -> list[str]:
    return [c for c in figures.KEY_COLUMNS if any(c in r["metrics"] for r in found)]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def flat(found: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells (params, key figures, status) for CSV and Markdown."""
    params = list(found[0]["params"]) if found else []
    shown = columns(found)
    header = ["trial", "adapter", *params, *shown, "seconds", "status", "feasible", "pareto"]
    cells = [
        [
            r["trial"],
            r["adapter"],
            *(_cell(r["params"][p]) for p in params),
            *(_cell(r["metrics"].get(c)) for c in shown),
        ]
        + [_cell(r["seconds"]), r["status"], str(r.get("feasible")), str(r.get("pareto", False))]
        for r in found
    ]
    return header, cells


def as_csv(found: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerows([flat(found)[0], *flat(found)[1]])
    return out.getvalue()


def as_markdown(found: list[dict]) -> str:
    header, cells = flat(found)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(c) + " |" for c in cells)]) + "\n"


def as_rich(found: list[dict], title: str):
    """The rich table: a figure with its change against the current build; ★ the Pareto front;
    infeasible trials dimmed, with the reason."""
    from rich.table import Table

    params = list(found[0]["params"]) if found else []
    shown = columns(found)
    table = Table(title=title, title_justify="left")
    for name in ["trial", *(["adapter"] if len({r["adapter"] for r in found}) > 1 else []), *params, *shown]:
        table.add_column(
            name.split(".")[-1] if name in params else name, justify="left" if name == "trial" else "right"
        )
    table.add_column("s", justify="right")
    table.add_column("")
    for row in found:
        figures = []
        for c in shown:
            value, delta = row["metrics"].get(c), row["delta"].get(c)
            figures.append(_cell(value) + (f" [dim]({delta:+.3g})[/]" if delta else ""))
        mark = "★" if row.get("pareto") else ""
        note = (
            mark
            if row.get("feasible")
            else "✗ " + ", ".join(w.split(" (")[0].split(":")[0] for w in row["infeasible_because"])
        )
        adapter = [row["adapter"]] if len({r["adapter"] for r in found}) > 1 else []
        cells = [row["trial"], *adapter, *(_cell(row["params"][p]) for p in params), *figures, _cell(row["seconds"])]
        table.add_row(*cells, note, style=None if row.get("feasible") else "dim")
    return table


def require_rows(found: list[dict], sweep: str) -> None:
    if not found:
        raise ParamsError(f"sweep {sweep} has no trials")
