"""`doit versions`: every version of each artifact in git history, what it was built from and what it measured.

The history is the git log of each step's `.dvc` file (a stage, or a stage of one adapter:
`finetune:travel`): its `outs` name the content (DVC's hash) and its `meta:` holds the build record
(fingerprint: params, code, libraries, inputs) and the metrics.
"""

from __future__ import annotations

import json
import subprocess

import yaml
from doit.cmd_base import Command
from rich.table import Table

from tasks import ui
from tasks.engine.fingerprint import diff_keys
from tasks.paths import split_step
from tasks.pipeline import BY_NAME, STAGES, plan
from tasks.quality.names import KEY_METRICS

# What users call each artifact, besides its stage's name.
ALIASES = {
    "prepared": "data",
    "awq": "quantize",
    "lora": "finetune",
    "onnx": "export",
    "onnx_adapter": "adapter",
    "answers": "smoke",
    "eval": "evaluate",
    "registry": "register",
}
WORKSPACE = "workspace"


def _git(root, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, text=True, capture_output=True, check=True).stdout


def file_at(root, rev: str, rel: str) -> str:
    """A file's text at a git revision. The revision comes from the command line: after
    --end-of-options, one that starts with `-` (`--output=<file>`) is a revision git rejects, never
    an option it obeys."""
    return _git(root, "show", "--end-of-options", f"{rev}:{rel}")


def _record(root, rev: str, rel: str) -> dict | None:
    """The .dvc document of `rel` at a git revision, or in the workspace."""
    try:
        text = (root / rel).read_text() if rev == WORKSPACE else file_at(root, rev, rel)
        return yaml.safe_load(text)
    except (OSError, subprocess.CalledProcessError, yaml.YAMLError):
        return None


def history(root, rel: str) -> list[dict]:
    """Versions of one .dvc file, newest first: the workspace's (if not committed yet), then each commit's."""
    try:
        log = _git(root, "log", "--format=%H%x1f%cs%x1f%s", "--", rel)
    except subprocess.CalledProcessError:
        log = ""  # a repository without a commit yet: the workspace's version alone
    versions = []
    for line in log.splitlines():
        commit, date, subject = line.split("\x1f", 2)
        versions.append({"rev": commit[:8], "date": date, "subject": subject, "doc": _record(root, commit, rel)})
    workspace = _record(root, WORKSPACE, rel)
    if workspace and (not versions or workspace != versions[0]["doc"]):
        built = str((workspace.get("meta") or {}).get("built", ""))[:10]
        versions.insert(0, {"rev": WORKSPACE, "date": built, "subject": "(not committed)", "doc": workspace})
    return [v for v in versions if v["doc"]]


def _fingerprint(doc: dict) -> dict:
    return (doc.get("meta") or {}).get("fingerprint") or {}


def _changes(doc: dict, older: dict | None) -> str:
    """What this version was built from, as the difference from the version before it."""
    if older is None:
        return "first version"
    new, old = _fingerprint(doc), _fingerprint(older)
    parts = []
    for key in diff_keys(old, new):
        if key.startswith("params."):
            parts.append(f"{key.split('.', 2)[-1]}: {_lookup(old, key)} → {_lookup(new, key)}")
        else:
            parts.append(f"{key} changed")
    return "; ".join(parts) or "same inputs (rebuilt)"


def _lookup(doc: dict, dotted: str):
    for part in dotted.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def _metric(name: str, value) -> str:
    if name == "bytes":
        return ui.human_size(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def version_rows(step: str, root, rel: str) -> list[dict]:
    """One artifact's versions, newest first: revision, date, content hash, whether the workspace
    holds it, what it was built from against the version before, key metrics, commit message."""
    versions = history(root, rel)
    current = (_record(root, WORKSPACE, rel) or {}).get("outs", [{}])[0].get("md5")
    rows = []
    for i, version in enumerate(versions):
        doc = version["doc"]
        meta = doc.get("meta") or {}
        metrics = {**(meta.get("metrics") or {}), **(meta.get("details") or {})}
        older = versions[i + 1]["doc"] if i + 1 < len(versions) else None
        rows.append(
            {
                "rev": version["rev"],
                "date": version["date"],
                "md5": doc["outs"][0]["md5"],
                "in_workspace": doc["outs"][0]["md5"] == current,
                "built_from": _changes(doc, older),
                "metrics": {k: metrics[k] for k in KEY_METRICS[split_step(step)[0]] if k in metrics},
                "subject": version["subject"],
            }
        )
    return rows


def version_table(step: str, root, rel: str) -> Table:
    table = Table(title=f"{step}: {rel}", title_justify="left")
    for column in ("version", "date", "content", "built from (vs. the version before)", "metrics", "message"):
        table.add_column(column, overflow="fold")
    for row in version_rows(step, root, rel):
        shown = ", ".join(f"{k} {_metric(k, v)}" for k, v in row["metrics"].items())
        marker = " ●" if row["in_workspace"] else ""
        table.add_row(row["rev"] + marker, row["date"], row["md5"][:8], row["built_from"], shown, row["subject"])
    return table


def diff_table(step: str, root, rel: str, rev_a: str, rev_b: str) -> Table:
    """Every build-record key (params, code, libraries, inputs, metrics) that differs between two versions."""
    a, b = _record(root, rev_a, rel), _record(root, rev_b, rel)
    for rev, doc in ((rev_a, a), (rev_b, b)):
        if doc is None:
            raise ValueError(f"{rel} does not exist at {rev}")
    table = Table(title=f"{step}: {rev_a} → {rev_b}", title_justify="left")
    for column in ("key", rev_a, rev_b):
        table.add_column(column, overflow="fold")
    table.add_row("content", a["outs"][0]["md5"][:8], b["outs"][0]["md5"][:8])
    meta_a, meta_b = a.get("meta") or {}, b.get("meta") or {}
    for section in ("fingerprint", "metrics"):
        old, new = meta_a.get(section) or {}, meta_b.get(section) or {}
        for key in diff_keys(old, new):
            table.add_row(f"{section}.{key}", str(_lookup(old, key)), str(_lookup(new, key)))
    return table


def _artifact_names() -> str:
    aliases = {stage: alias for alias, stage in ALIASES.items()}
    return ", ".join(f"{s.name} ({aliases[s.name]})" if s.name in aliases else s.name for s in STAGES)


def _selected(paths, artifact: str) -> list[str]:
    """The steps an --artifact names: every step (none named), a stage's (every adapter's), or one."""
    stage, adapter = split_step(artifact)
    stage = ALIASES.get(stage, stage)
    if not artifact:
        return paths.steps()
    if stage not in BY_NAME:
        return []
    steps = paths.steps_of(stage)
    return [s for s in steps if split_step(s)[1] == adapter] if adapter else steps


class Versions(Command):
    doc_purpose = "list each artifact's versions in git history (or diff two of them)"
    doc_usage = "[--artifact NAME] [--diff REV_A [--to REV_B]] [--json]"
    # doit wraps each line of this on its own: one line per paragraph.
    doc_description = "\n".join(
        (
            "A table per artifact: commit, date, content hash, what it was built from and its key metrics; "
            "● marks the version in the workspace.",
            f"Artifact names (--artifact): {_artifact_names()}; a stage of each adapter is every "
            "adapter's, or one adapter's as finetune:<adapter>.",
            "--diff REV_A: the build records of that version and the workspace's side by side; "
            "--to REV_B compares with REV_B instead (`workspace` names the workspace).",
        )
    )
    cmd_options = (
        {"name": "artifact", "long": "artifact", "type": str, "default": "", "help": "one artifact only (see below)"},
        {"name": "diff", "long": "diff", "type": str, "default": "", "help": "compare this revision's build record"},
        {
            "name": "to",
            "long": "to",
            "type": str,
            "default": WORKSPACE,
            "help": "...with this one's (default: workspace)",
        },
        {"name": "json", "long": "json", "type": bool, "default": False, "help": "the versions as JSON, nothing else"},
    )

    def execute(self, opt_values, pos_args):
        if pos_args:
            ui.console.print(
                f"[bold red]error:[/] unexpected {' '.join(pos_args)!r}: revisions go after --diff and --to"
            )
            return 1
        _, paths = plan()
        selected = _selected(paths, opt_values["artifact"])
        if not selected:
            names = ", ".join([*(s.name for s in STAGES), *ALIASES, *paths.steps()])
            ui.console.print(f"[bold red]error:[/] no artifact {opt_values['artifact']!r}; one of: {names}")
            return 1
        try:
            if opt_values["json"] and not opt_values["diff"]:
                found = {s: version_rows(s, paths.root, paths.dvc_file(s).relative_to(paths.root).as_posix())
                         for s in selected}  # fmt: skip
                print(json.dumps(found, indent=2))  # noqa: T201  (data for other programs)
                return 0
            for step in selected:
                rel = paths.dvc_file(step).relative_to(paths.root).as_posix()
                if opt_values["diff"]:
                    ui.console.print(diff_table(step, paths.root, rel, opt_values["diff"], opt_values["to"]))
                else:
                    ui.console.print(version_table(step, paths.root, rel))
        except subprocess.CalledProcessError as exc:
            ui.console.print(f"[bold red]error:[/] git: {exc.stderr.strip() or exc}")
            return 1
        except ValueError as exc:
            ui.console.print(f"[bold red]error:[/] {exc}")
            return 1
        return 0
