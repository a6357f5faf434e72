"""The one UI layer: a rich console, sizes for people, and progress bars for long stages (the doit
reporter that uses them is tasks/cli/reporter.py)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

# Bound to the real stdout: doit swaps sys.stdout while actions run.
console = Console(file=sys.__stdout__, highlight=False)


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class StageProgress:
    """Progress bars (one per named loop) while a stage's child runs; they vanish when it ends.
    Quiet: none (rich draws one live display at a time; steps of several trials run at once)."""

    def __init__(self, stage: str, quiet: bool = False):
        # Imported here: a no-op build draws no progress (rich.progress is a tenth of its start-up).
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.stage = stage
        self.progress = Progress(
            TextColumn("   {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.bars: dict[str, int] = {}
        self.quiet = quiet

    def __enter__(self):
        if not self.quiet:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if not self.quiet:
            self.progress.stop()

    def update(self, bar: str, done: int, total: int | None) -> None:
        if self.quiet:
            return
        if bar not in self.bars:
            self.bars[bar] = self.progress.add_task(bar, total=total)
        self.progress.update(self.bars[bar], completed=done, total=total)

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        if self.quiet:
            return
        table = Table(title=title, title_justify="left", show_lines=False, expand=False)
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*[str(c) for c in row])
        self.progress.console.print(table)
