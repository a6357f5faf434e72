"""The report's sweep section: the latest sweep's table and its trade-off plot (eval perplexity
against size, colour for decode speed, the Pareto front joined and labelled)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from tasks.cli.page import figure, html_table, save
from tasks.errors import ParamsError
from tasks.experiments import record, table
from tasks.quality.figures import PARETO


def plot_pareto(found: list[dict], out: Path, sweep: str) -> Path | None:
    """ppl against size_mb for every done trial; colour: decode_tok_s; ringed and starred: the
    Pareto front."""
    points = [r for r in found if all(isinstance(r["metrics"].get(k), (int, float)) for k in PARETO)]
    if not points:
        return None
    plt, fig, ax = figure()
    fig.set_size_inches(7, 4.2)
    x = [r["metrics"]["size_mb"] for r in points]
    y = [r["metrics"]["ppl"] for r in points]
    speed = [r["metrics"]["decode_tok_s"] for r in points]
    edges = ["black" if r.get("pareto") else "none" for r in points]
    drawn = ax.scatter(x, y, c=speed, cmap="viridis", s=60, edgecolors=edges)
    # The front is three-dimensional (speed is the colour): its trials are marked, not joined.
    for r, px, py in zip(points, x, y, strict=True):
        label = r["trial"] + (" *" if r.get("pareto") else "")
        ax.annotate(label, (px, py), fontsize=7, xytext=(4, 3), textcoords="offset points")
    fig.colorbar(drawn, ax=ax, label="decode tokens/s (adapter)")
    ax.set(
        title=f"sweep {sweep}: quality vs size vs speed (* Pareto front)",
        xlabel="ONNX model + adapter (MB)",
        ylabel="eval perplexity (ONNX + adapter)",
    )
    ax.grid(alpha=0.3)
    ax.margins(x=0.2, y=0.1)  # room for the labels
    return save(plt, fig, out / f"sweep_{sweep}.png")


def sweep_section(paths, current: dict, gates: dict, out: Path) -> str:
    """The latest sweep as HTML (empty when none was run)."""
    try:
        name, doc = record.find(paths.root, None)
    except ParamsError:
        return ""
    found = table.ordered(table.judge(table.rows(doc, current), None, gates), None)
    header, cells = table.flat(found)
    image = plot_pareto(found, out, name)
    encoded = base64.b64encode(image.read_bytes()).decode() if image else ""
    picture = f'<img alt="sweep {html.escape(name)}" src="data:image/png;base64,{encoded}">' if image else ""
    shown = f"<code>doit exp show {html.escape(name)}</code>"
    return f"""<h2>Sweep {html.escape(name)} ({len(doc["trials"])} trials; {shown})</h2>
{html_table(header, cells)}
{picture}
"""
