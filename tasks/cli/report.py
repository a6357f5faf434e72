"""`doit report`: one HTML page (PNG plots embedded) of what each stage cost and bought, against
an earlier build; and the compact table printed at the end of every `doit` run.

Everything comes from the build's own records: models/metrics/<name>/<stage>.json and
<name>/<adapter>/<stage>.json (git-tracked, so any revision can be compared),
models/plots/<name>/<adapter>/*.csv and the answers of smoke and evaluate, a section per adapter.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from doit.cmd_base import Command
from rich.table import Table

from tasks import ui
from tasks.cli.page import figure, fmt, html_table, save
from tasks.cli.sweep_report import sweep_section
from tasks.cli.versions import file_at
from tasks.paths import split_step, step_name
from tasks.pipeline import plan
from tasks.quality.gates import adapter_values
from tasks.quality.names import KEY_METRICS, VARIANTS


def metrics_at(paths, rev: str | None) -> dict[str, dict]:
    """{step: metrics} from the workspace (rev None) or a git revision; steps without a file are
    left out (an adapter removed from params too: only the params' adapters are read)."""
    found = {}
    for stage in paths.steps():
        path = paths.metrics(stage)
        try:
            if rev is None:
                text = path.read_text()
            else:
                text = file_at(paths.root, rev, path.relative_to(paths.root).as_posix())
            found[stage] = json.loads(text)
        except (OSError, subprocess.CalledProcessError, json.JSONDecodeError):
            continue
    return found


def previous_build(paths, current: dict) -> str | None:
    """The newest commit whose recorded metrics differ from the workspace's (the build before this one)."""
    folder = paths.records().relative_to(paths.root).as_posix()
    log = subprocess.run(["git", "log", "--format=%h", "--", folder], cwd=paths.root, capture_output=True, text=True)
    for rev in log.stdout.split():
        if metrics_at(paths, rev) != current:
            return rev
    return None


def changes(now: dict, then: dict) -> list[tuple[str, object, object]]:
    """(step.metric, then, now) for every numeric metric that differs between two builds."""
    rows = []
    for stage in dict.fromkeys([*now, *then]):
        a, b = then.get(stage, {}), now.get(stage, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                rows.append((f"{stage}.{key}", a.get(key), b.get(key)))
    return rows


# ---- plots ---------------------------------------------------------------------------------------


def plot_training_loss(csv_path: Path, out: Path, adapter: str) -> Path | None:
    if not csv_path.is_file():
        return None
    rows = list(csv.DictReader(csv_path.open()))
    plt, fig, ax = figure()
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], color="tab:blue")
    ax.set(title=f"training loss (LoRA {adapter})", xlabel="step", ylabel="loss")
    ax.grid(alpha=0.3)
    return save(plt, fig, out / f"training_loss_{adapter}.png")


def plot_bars(title: str, ylabel: str, bars: dict[str, float], out: Path, name: str, log: bool = False) -> Path | None:
    bars = {k: v for k, v in bars.items() if v is not None}
    if not bars:
        return None
    plt, fig, ax = figure()
    drawn = ax.bar(
        list(bars), list(bars.values()), color=["tab:gray", "tab:orange", "tab:green", "tab:blue"][: len(bars)]
    )
    ax.bar_label(drawn, labels=[fmt(v) for v in bars.values()], fontsize=8)
    ax.set(title=title, ylabel=ylabel)
    if log:
        ax.set_yscale("log")
    return save(plt, fig, out / name)


def plots(paths, now: dict, out: Path, adapter: str) -> list[Path]:
    """One adapter's figures: its training loss, its eval perplexity per stage, sizes, decode speed."""
    ev = now.get(step_name("evaluate", adapter), {})
    made = [
        plot_training_loss(paths.plots(adapter) / "train_loss.csv", out, adapter),
        plot_bars(
            f"eval perplexity per stage ({adapter})",
            "perplexity",
            {label: ev.get(f"perplexity_{v}") for v, label in VARIANTS.items()},
            out,
            f"perplexity_{adapter}.png",
        ),
        plot_bars(
            "size on disk",
            "MB",
            {k: ev[f"bytes_{k}"] / 1e6 for k in ("base", "awq", "adapter", "onnx") if f"bytes_{k}" in ev},
            out,
            f"sizes_{adapter}.png",
        ),
        plot_bars(
            f"onnxruntime-genai decode ({adapter})",
            "tokens/s",
            {"with adapter": ev.get("tokens_per_second_adapter"), "without": ev.get("tokens_per_second_no_adapter")},
            out,
            f"decode_speed_{adapter}.png",
        ),
    ]
    return [p for p in made if p]


# ---- the page ------------------------------------------------------------------------------------


ANSWER_COLUMNS = ["question", "answer (adapter)", "answer (no adapter)"]


def _answers(paths, stage: str) -> list[list]:
    """Answers with the adapter and without: smoke's configured prompts, or evaluate's held-out ones."""
    try:
        answers = json.loads((paths.output(stage) / "answers.json").read_text())["answers"]
    except (OSError, KeyError, json.JSONDecodeError):
        return []
    return [
        [
            a["prompt"],
            json.dumps(a["answer"], ensure_ascii=False)[:300],
            json.dumps(a["answer_without_adapter"], ensure_ascii=False)[:300],
        ]
        for a in answers
    ]


def _key_metric(step: str, metrics: dict) -> str:
    # The stage's first key figure other than its size and time (the table has columns for those).
    key = next((k for k in KEY_METRICS.get(split_step(step)[0], ()) if k not in ("bytes", "seconds")), None)
    return f"{key} {fmt(metrics.get(key))}" if key else ""


def adapter_section(paths, adapter: str, now: dict, then: dict, against: str | None, images: list[Path]) -> str:
    """One adapter's evaluation, plots and answers."""
    step = step_name("evaluate", adapter)
    ev, before = now.get(step, {}), then.get(step, {})
    eval_rows = [
        [label, ev.get(f"loss_{v}"), ev.get(f"perplexity_{v}"), before.get(f"perplexity_{v}")]
        for v, label in VARIANTS.items()
    ]
    pictures = "".join(
        f'<img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">' for p in images
    )
    ttft = fmt(ev.get("ttft_ms_adapter")), fmt(ev.get("ttft_ms_no_adapter"))
    name = html.escape(adapter)
    return f"""<h2>Adapter {name}: evaluation ({fmt(ev.get("examples"))} eval examples)</h2>
{html_table(["model", "loss", "perplexity", f"perplexity at {against or '-'}"], eval_rows)}
<p>compression: base / AWQ {fmt(ev.get("compression_awq"))}x, base / ONNX {fmt(ev.get("compression_onnx"))}x;
time to first token {ttft[0]} ms with the adapter, {ttft[1]} ms without</p>
{pictures}
<h3>Smoke answers ({name})</h3>{html_table(ANSWER_COLUMNS, _answers(paths, step_name("smoke", adapter)))}
<h3>Held-out questions ({name}, eval split)</h3>{html_table(ANSWER_COLUMNS, _answers(paths, step))}
"""


def render(paths, now: dict, then: dict, against: str | None, sections: list[str]) -> str:
    stage_rows = [
        [s, m.get("seconds"), ui.human_size(m["bytes"]) if "bytes" in m else None, _key_metric(s, m)]
        for s, m in now.items()
    ]
    compared = (
        f"<h2>Changed since {html.escape(against)}</h2>" + html_table(["metric", against, "now"], changes(now, then))
        if against
        else "<h2>Changed</h2><p>No earlier build in git history to compare with.</p>"
    )
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Build report: {html.escape(paths.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left;font-size:13px}} img{{max-width:49%}}</style></head><body>
<h1>Build report: {html.escape(paths.name)}</h1><p>{stamp}; compared with {html.escape(against or "nothing")}</p>
<h2>Stages</h2>{html_table(["stage", "seconds", "size", "key metric"], stage_rows)}
{"".join(sections)}
{compared}
</body></html>
"""


def write_report(paths, against: str | None = None) -> Path:
    now = metrics_at(paths, None)
    if not now:
        raise ValueError(f"no metrics under {paths.records()}: run `doit` first")
    against = against or previous_build(paths, now)
    then = metrics_at(paths, against) if against else {}
    out = paths.models / "report"
    out.mkdir(parents=True, exist_ok=True)
    sections = [adapter_section(paths, a, now, then, against, plots(paths, now, out, a)) for a in paths.adapters]
    sections.append(sweep_section(paths, {a: adapter_values(paths, a) for a in paths.adapters}, plan()[0].gates, out))
    page = out / "index.html"
    page.write_text(render(paths, now, then, against, sections), encoding="utf-8")
    return page


class Report(Command):
    doc_purpose = "write models/<name>/report/index.html: metrics, plots, answers, changes since a build"
    doc_usage = "[--against REV]"
    cmd_options = (
        {
            "name": "against",
            "long": "against",
            "type": str,
            "default": "",
            "help": "git revision to compare with (default: the previous build in git history)",
        },
    )

    def execute(self, opt_values, pos_args):
        try:
            page = write_report(plan()[1], opt_values["against"] or None)
        except ValueError as exc:
            ui.console.print(f"[bold red]error:[/] {exc}")
            return 1
        ui.console.print(f"[green]report:[/] {page}")
        return 0


# ---- the end-of-run table ------------------------------------------------------------------------


def summary_table(paths, status: dict[str, str]) -> Table | None:
    """Stage, what happened in this run, time, size and a key metric; evaluate's figures below."""
    now = metrics_at(paths, None)
    if not now:
        return None
    table = Table(title="build summary", title_justify="left", box=None, padding=(0, 1))
    for column in ("stage", "this run", "built in", "size", "key metric"):
        table.add_column(column)
    for step, m in now.items():
        size = ui.human_size(m["bytes"]) if "bytes" in m else ""
        table.add_row(step, status.get(step, "-"), f"{m.get('seconds', 0):.1f}s", size, _key_metric(step, m))
    lines = [_eval_line(a, now[step_name("evaluate", a)]) for a in paths.adapters if step_name("evaluate", a) in now]
    if lines:
        table.caption = "\n".join(lines)
        table.caption_justify = "left"
    return table


def _eval_line(adapter: str, ev: dict) -> str:
    """One adapter's eval perplexity through the stages, what finetuning bought, its decode speed."""
    ppl = " → ".join(
        f"{label} {fmt(ev.get(f'perplexity_{v}'))}"
        + (f" (round-to-nearest {fmt(ev.get('perplexity_rtn'))})" if v == "awq" else "")
        for v, label in VARIANTS.items()
        if v != "rtn"  # not a step of the build: the baseline AWQ is measured against
    )
    before, after = ev.get("perplexity_awq"), ev.get("perplexity_awq_adapter")
    bought = f"; finetuning: {100 * (after / before - 1):+.0f} % perplexity" if before and after else ""
    return (
        f"{adapter}: eval perplexity: {ppl}{bought}; decode {fmt(ev.get('tokens_per_second_adapter'))} tok/s "
        f"with adapter, {fmt(ev.get('tokens_per_second_no_adapter'))} without"
    )
