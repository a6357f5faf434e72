"""`doit status`, `doit dag` and `doit clean`: where each step stands, how the steps connect, and
taking outputs out of the workspace that DVC's cache keeps.

- `doit status [--json]`: every step in build order, up to date or stale with the reason (a step
  after a stale one is stale "after <step>": it runs once that one has), one line each;
- `doit dag [--mermaid | --dot]`: the steps and their upstream edges, as `dvc dag` shows a pipeline;
- `doit clean [step ...]`: removes the named steps' outputs (every step's, none named) whose build
  DVC's cache holds; the next `doit` restores them. DVC's cache itself is `dvc gc`'s.
"""

from __future__ import annotations

import json
import shutil

from doit.cmd_base import Command, DoitCmdBase

from tasks.cli.guard import locked
from tasks.engine import store
from tasks.engine.uptodate import UpToDate
from tasks.pipeline import plan
from tasks.ui import console


def step_state(task, tasks: dict, dep_manager) -> tuple[str, str | None]:
    """("up to date" | "stale", why) of one step's doit task, as `doit` would decide it now."""
    check = next((u for u, *_ in task.uptodate if isinstance(u, UpToDate)), None)
    if check is None:  # a step params make impossible
        return "cannot be built", plan()[0].unable(task.name)
    status = dep_manager.get_status(task, tasks, get_log=True).status
    return ("up to date", None) if status == "up-to-date" else ("stale", check.reason)


def json_option(what: str) -> dict:
    return {"name": "json", "long": "json", "type": bool, "default": False, "help": f"{what} as JSON, nothing else"}


class Status(DoitCmdBase):
    doc_purpose = "every step in build order: up to date, or stale and why"
    doc_usage = "[--json]"
    doc_description = __doc__.split("\n\n")[1]
    cmd_options = (json_option("the steps"),)

    def _execute(self, json=False):  # noqa: A002  (doit passes options by name)
        refused = locked()  # checking a step refreshes doit's record of it
        if refused:
            return refused
        found, _ = plan()
        tasks = {task.name: task for task in self.task_list}
        rows = []
        for step in found.stages:
            state, why = step_state(tasks[step], tasks, self.dep_manager)
            stale_up = [r["step"] for r in rows if r["step"] in found.upstream(step) and r["state"] == "stale"]
            if state == "up to date" and stale_up:
                state, why = "stale", f"after {stale_up[0]}: checked again once that one is built"
            default = step in found.default()
            rows.append({"step": step, "state": state, "why": why, "in_default_build": default})
        if json:
            self.outstream.write(_dumps(rows) + "\n")
            return 0
        for row in rows:
            mark = {"up to date": "[green]✔[/]", "stale": "[yellow]●[/]"}.get(row["state"], "[dim]-[/]")
            note = "" if row["in_default_build"] else " [dim](not in a plain doit)[/]"
            console.print(f"{mark} {row['step']:<18} {row['state']}{': ' + row['why'] if row['why'] else ''}{note}")
        return 0


def _dumps(doc) -> str:
    return json.dumps(doc, indent=2)


class Dag(Command):
    doc_purpose = "the steps and their upstream edges (text, Mermaid or Graphviz dot)"
    doc_usage = "[--mermaid | --dot]"
    cmd_options = (
        {"name": "mermaid", "long": "mermaid", "type": bool, "default": False, "help": "a Mermaid graph"},
        {"name": "dot", "long": "dot", "type": bool, "default": False, "help": "a Graphviz digraph"},
    )

    def execute(self, opt_values, pos_args):
        found, _ = plan()
        edges = [(up, step) for step in found.stages for up in found.upstream(step)]
        if opt_values["mermaid"]:
            ident = lambda s: s.replace(":", "_")  # noqa: E731  (Mermaid ids take no ':')
            lines = ["graph LR", *(f'  {ident(a)}["{a}"] --> {ident(b)}["{b}"]' for a, b in edges)]
        elif opt_values["dot"]:
            lines = ["digraph build {", *(f'  "{a}" -> "{b}";' for a, b in edges), "}"]
        else:
            lines = [f"{step} <- {', '.join(found.upstream(step)) or '(nothing)'}" for step in found.stages]
        print("\n".join(lines))  # noqa: T201  (for other programs too)
        return 0


class Clean(DoitCmdBase):
    doc_purpose = "remove steps' outputs from the workspace; DVC's cache keeps them and the next doit restores them"
    doc_usage = "[step ...]"
    doc_description = (
        "An output whose build is not in DVC's cache is kept (it would be lost). The .dvc files stay. "
        "To free DVC's cache itself: dvc gc --workspace --all-commits (docs/versions.md)."
    )
    cmd_options = ()

    def _execute(self, pos_args=None):
        from dvc.repo import Repo

        refused = locked()
        if refused:
            return refused
        found, paths = plan()
        named = pos_args or []
        steps = [s for s in found.stages if not named or s in named or s.split(":")[0] in named]
        unknown = [n for n in named if not any(s == n or s.split(":")[0] == n for s in found.stages)]
        if unknown:
            console.print(f"[bold red]error:[/] no step {unknown[0]!r}; steps: {', '.join(found.stages)}")
            return 2
        with Repo(str(paths.root)) as repo:
            for step in steps:
                _clean(repo, paths, step)
        console.print("[dim]DVC's cache keeps every build: `dvc gc` frees it (docs/versions.md)[/]")
        return 0


def _clean(repo, paths, step: str) -> None:
    out, md5 = paths.output(step), store.content_hash(paths.dvc_file(step))
    rel = out.relative_to(paths.root)
    if not out.exists():
        return
    cached = md5 and repo.cache.local.exists(md5) and not store.manifest_problem(repo, md5)
    if cached and all(repo.cache.local.exists(o.value) for o in store.object_ids(repo, md5)):
        shutil.rmtree(out)
        console.print(f"removed {rel} (DVC's cache keeps it: `doit` restores it)")
    else:
        console.print(f"[yellow]kept {rel}[/]: its build is not in DVC's cache, removing it would lose it")
