"""From a sweep's grid to its trials, its plan (what each step will be: built, from the cache, the
workspace's, or shared with another trial) and its run; and `exp apply`'s edit of params.yaml."""

from __future__ import annotations

import os

import yaml

from tasks import ui
from tasks.errors import ParamsError
from tasks.experiments import record, spec
from tasks.experiments.units import predict, unit_graph
from tasks.pipeline import PARAMS_ENV

HOW = {"build": "[bold]build[/]", "cached": "[green]cache[/]", "workspace": "[cyan]workspace[/]"}


def params_file(root):
    return root / os.environ.get(PARAMS_ENV, "params.yaml")


def raw_params(root) -> dict:
    from tasks.params_file import load_params

    path = params_file(root)
    load_params(path)  # the file itself must be valid before any trial is made of it
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def check_values(raw: dict, grid: dict, path) -> None:
    """Each value on its own, so a refused one is named by its option, before any trial is made."""
    for key, values in grid.items():
        for value in values:
            spec.trial_params(raw, {key: value}, path, f"-S {key}={value}")


def trials_of(root, grid: dict, sample: int | None, seed: int, yes: bool) -> dict:
    """{trial name: (Trial, Params)} of the grid, every one checked."""
    raw, path = raw_params(root), params_file(root)
    check_values(raw, grid, path)
    size = 1
    for values in grid.values():
        size *= len(values)
    trials = spec.make_trials(grid, sample, seed)
    if not trials:
        raise ParamsError("the grid is empty: give each -S key at least one value")
    if len(trials) > spec.MAX_TRIALS and not yes:
        raise ParamsError(
            f"{len(trials)} trials ({size} in the grid): more than {spec.MAX_TRIALS}; "
            f"draw some with --sample N (--seed S), or run them all with --yes"
        )
    return {t.name: (t, spec.trial_params(raw, t.overrides, path, f"trial {t.name}")) for t in trials}


def show_plan(repo, root, sweep: str, units: dict, steps_of: dict) -> dict[str, str]:
    """Print each trial's steps: build, cache, workspace, or shared with the trial that has it
    first; return {ident: how}."""
    from rich.table import Table

    how = predict(repo, root, units, sweep)
    steps = list(dict.fromkeys(s for trial in steps_of.values() for s in trial))
    table = Table(title=f"sweep {sweep}: {len(steps_of)} trials", title_justify="left")
    for column in ["trial", *steps]:
        table.add_column(column)
    for trial, own in steps_of.items():
        cells = []
        for step in steps:
            unit = units[own[step]]
            cells.append(HOW[how[unit.ident]] if unit.trials[0] == trial else "[dim]shared[/]")
        table.add_row(trial, *cells)
    ui.console.print(table)
    counts = {k: sum(1 for v in how.values() if v == k) for k in HOW}
    ui.console.print(
        f"{len(units)} distinct steps for {sum(len(s) for s in steps_of.values())} trial steps: "
        f"{counts['build']} to build, {counts['cached']} from DVC's cache, {counts['workspace']} in the workspace"
    )
    return how


def start(root, sweep: str, grid: dict, options: dict) -> int:
    """Plan the sweep and (unless a dry run) run it; 0, or 1 when a trial failed."""
    from dvc.repo import Repo

    from tasks.experiments.sweep import Sweep

    trials = trials_of(root, grid, options["sample"], options["seed"], options["yes"])
    units, steps_of = unit_graph(root, {name: params for name, (_, params) in trials.items()})
    with Repo(str(root)) as repo:
        show_plan(repo, root, sweep, units, steps_of)
    if options["dry_run"]:
        return 0
    doc = record.load(root, sweep) or {"sweep": sweep, "started": record.now(), "trials": {}}
    doc |= {"params_file": params_file(root).relative_to(root).as_posix(), "grid": grid, "finished": None}
    doc |= {"sample": options["sample"], "seed": options["seed"]}
    doc["trials"] |= {name: {"overrides": trial.overrides} for name, (trial, _) in trials.items()}
    done = Sweep(root, sweep, doc, units, steps_of, options["jobs"], options["fail_fast"]).run()
    failed = [n for n in steps_of if done["trials"][n]["status"] == "failed"]
    for name in failed:
        trial = done["trials"][name]
        ui.console.print(
            f"[red]trial {name} failed[/]: {trial['error']}" + (f"\n  log: {trial['log']}" if trial["log"] else "")
        )
    return 1 if failed else 0


def rebuilds(root, sweep: str, overrides: dict) -> list[str]:
    """The steps a build of the current params with these overrides could not restore."""
    from dvc.repo import Repo

    raw, path = raw_params(root), params_file(root)
    params = spec.trial_params(raw, overrides, path, "exp apply")
    units, _ = unit_graph(root, {"apply": params})
    with Repo(str(root)) as repo:
        how = predict(repo, root, units, sweep)
    return [unit.step for ident, unit in units.items() if how[ident] == "build"]
