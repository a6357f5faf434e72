"""doit's reporter: each stage's start, end, time and size, failures with their log, and a summary."""

from __future__ import annotations

import time

from doit.reporter import ConsoleReporter

from tasks.engine import spare
from tasks.pipeline import plan
from tasks.ui import console, human_size


def _why_it_runs(task) -> str | None:
    """What made the step stale (its up-to-date check's reason), or that `-a` forces it."""
    from tasks.engine import runner
    from tasks.engine.uptodate import UpToDate

    if runner.forced:
        return "forced (doit -a): recomputed, never restored"
    check = next((u for u, *_ in task.uptodate if isinstance(u, UpToDate)), None)
    return check.reason if check and check.reason != "not checked yet" else None


class Reporter(ConsoleReporter):
    """doit reporter: each stage's start, end, time and output size; failures with their log."""

    desc = "rich stage reporter"

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self.started: dict[str, float] = {}
        self.ran = 0
        self.status: dict[str, str] = {}  # stage: what this run did with it, for the summary table

    def initialize(self, tasks, selected_tasks):
        """The steps this run may build: the selected tasks and what they depend on (a spare
        stage process is started only while one of them is still to come)."""
        todo, seen = list(selected_tasks), set()
        while todo:
            name = todo.pop()
            if name not in seen and name in tasks:
                seen.add(name)
                todo.extend(tasks[name].task_dep)
        spare.expect(name for name in seen if tasks[name].actions)

    def get_status(self, task):
        spare.reached(task.name)

    def execute_task(self, task):
        if not task.actions:
            return  # a stage's group task (`doit finetune`): its adapters' steps report themselves
        self.started[task.name] = time.perf_counter()
        why = _why_it_runs(task)
        reason = f"\n  [yellow]{why}[/]" if why else ""
        console.print(f"[bold cyan]▶ {task.name}[/] [dim]{task.doc or ''}[/]{reason}")

    def add_success(self, task):
        if not task.actions:
            return
        self.ran += 1
        seconds = time.perf_counter() - self.started.get(task.name, time.perf_counter())
        size = task.values.get("size")
        extra = f", {human_size(size)}" if size is not None else ""
        self.status[task.name] = "restored" if task.values.get("restored") else "built"
        if task.values.get("restored"):
            how = task.values["restored"]
            console.print(
                f"[bold green]↺ {task.name}[/] restored from cache ({how}, no recompute) {seconds:.1f}s{extra}"
            )
        else:
            console.print(f"[bold green]✔ {task.name}[/] {seconds:.1f}s{extra}")

    def add_failure(self, task, fail):
        self.failures.append({"task": task, "exception": fail})
        message = fail.get_msg().strip() if hasattr(fail, "get_msg") else str(fail)
        console.print(f"[bold red]✘ {task.name} failed[/]\n  {message}")

    def skip_uptodate(self, task):
        if not task.actions:
            return
        self.status[task.name] = "up to date"
        console.print(f"[dim]· {task.name} up to date[/]")

    def skip_ignore(self, task):
        console.print(f"[dim]· {task.name} ignored[/]")

    def runtime_error(self, msg):
        self.runtime_errors.append(msg)

    def complete_run(self):
        for msg in self.runtime_errors:
            console.print(f"[bold red]error:[/] {msg}")
        if self.failures:
            names = ", ".join(f["task"].name for f in self.failures)
            console.print(f"[bold red]build failed[/] in {names}; later stages did not run")
        elif not self.runtime_errors:
            self._summary()
            if self.ran == 0:
                console.print("[green]nothing to do: every stage is up to date[/]")

    def _summary(self) -> None:
        """Each stage's time, size and key metric, with evaluate's figures (`doit report` has it all)."""
        from tasks.cli.report import summary_table

        table = summary_table(plan()[1], self.status)
        if table is not None and self.status:
            console.print(table)
