"""doit's own commands, fitted to the build (registered under their own names in pyproject.toml):

- `doit` / `doit run`: refuses `-n` (stages share one DVC repository and doit's record), takes the
  checkout's run lock whatever the reporter, sweeps what killed runs left and removes the outputs
  of adapters no longer in params;
- `doit forget`: under the run lock too (it rewrites doit's record); `--drop-cache` drops the
  steps' run-cache entries too;
- `doit list`: the stages in build order, each one outside the default build saying so; with
  `--status` under the run lock (checking a step refreshes its record);
- `doit info <stage>`: why the stage is stale, or that it is up to date, as its first line (a
  line for each adapter's step of a stage built per adapter); under the run lock.
"""

from __future__ import annotations

import json as jsonlib  # `json` is an option's name below

from doit.cmd_forget import Forget as DoitForget
from doit.cmd_info import Info as DoitInfo
from doit.cmd_list import List as DoitList
from doit.cmd_run import Run as DoitRun

from tasks.cli.guard import locked
from tasks.cli.status import json_option, step_state
from tasks.engine import runner, store
from tasks.engine.artifacts import read_yaml, remove_adapters, sweep_leftovers
from tasks.engine.fingerprint import fingerprint
from tasks.engine.uptodate import UpToDate
from tasks.errors import ParamsError
from tasks.pipeline import BY_NAME, STAGES, plan
from tasks.ui import console

PARALLEL = (
    "stages cannot run in parallel (doit -n): they share one DVC repository and doit's record; "
    "run doit without -n (each stage already uses every core)"
)


class Run(DoitRun):
    # doit passes options by the names in this signature: it must list them all.
    def _execute(
        self,
        outfile,
        verbosity=None,
        always=False,
        continue_=False,
        reporter="console",
        num_process=0,
        par_type="process",
        single=False,
        auto_delayed_regex=False,
        force_verbosity=False,
        failure_verbosity=0,
        pdb=False,
    ):
        if num_process and num_process > 1:
            console.print(f"[bold red]error:[/] {PARALLEL}")
            return 3
        refused = locked()
        if refused:
            return refused
        _sweep()
        runner.forced = bool(always)
        options = dict(verbosity=verbosity, always=always, continue_=continue_, reporter=reporter)
        options |= dict(num_process=num_process, par_type=par_type, single=single, pdb=pdb)
        options |= dict(auto_delayed_regex=auto_delayed_regex, force_verbosity=force_verbosity)
        return super()._execute(outfile, failure_verbosity=failure_verbosity, **options)


def _sweep() -> None:
    """Remove the staging and scratch folders killed runs left, and take the outputs of adapters
    params no longer name out of the build (only under the run lock)."""
    try:
        paths = plan()[1]
    except ParamsError:
        return  # the first stage reports it
    for folder in sweep_leftovers(paths):
        console.print(f"[dim]removed {folder.relative_to(paths.root)}, left by a killed run[/]")
    for adapter, items in remove_adapters(paths).items():
        shown = ", ".join(str(p.relative_to(paths.root)) for p in items if not p.name.endswith(".dvc"))
        console.print(
            f"[yellow]adapter {adapter} is no longer in params[/]: removed {shown} "
            "(DVC's cache keeps them: naming it again restores them)"
        )


class Forget(DoitForget):
    doc_description = (
        "`--drop-cache` also drops the run-cache entries of each step's build (the one its .dvc file "
        "records and the one its inputs now make): that build is never restored from DVC's run-cache "
        "again. To rebuild a step you distrust: `doit -s -a <step>`."
    )
    cmd_options = (
        *DoitForget.cmd_options,
        {
            "name": "drop_cache",
            "long": "drop-cache",
            "type": bool,
            "default": False,
            "help": "also drop the steps' run-cache entries",
        },
    )

    def _execute(self, forget_sub, forget_disable_default, forget_all, drop_cache=False):
        refused = locked()
        if refused:
            return refused
        if drop_cache:
            names = [t.name for t in self.task_list] if forget_all else self.sel_tasks or []
            _drop_run_cache(names)
        return super()._execute(forget_sub, forget_disable_default, forget_all)


def _drop_run_cache(names: list[str]) -> None:
    """Remove the run-cache entries of these steps' recorded and current fingerprints."""
    from dvc.repo import Repo

    found, paths = plan()
    steps = [s for s in found.stages if s in names or s.split(":")[0] in names]
    with Repo(str(paths.root)) as repo:
        for step in steps:
            recorded = ((read_yaml(paths.dvc_file(step)) or {}).get("meta") or {}).get("fingerprint")
            current = fingerprint(BY_NAME[step.split(":")[0]], step, found, paths)
            unique = {jsonlib.dumps(fp, sort_keys=True): fp for fp in (recorded, current) if fp}
            dropped = sum(store.drop_entries(repo, fp) for fp in unique.values())
            console.print(f"{step}: dropped {dropped} run-cache entr{'y' if dropped == 1 else 'ies'}")


class List(DoitList):
    doc_description = "Stages are listed in build order (`--sort=name` for alphabetical)."
    cmd_options = tuple(
        {**opt, "default": "definition"} if opt["name"] == "sort" else opt for opt in DoitList.cmd_options
    )

    def _execute(
        self, subtasks=False, quiet=True, status=False, private=False, list_deps=False, template=None,
        sort="definition", pos_args=None,
    ):  # fmt: skip
        refused = locked() if status else None
        if refused:
            return refused
        order = {stage.name: i for i, stage in enumerate(STAGES)}
        self.task_list.sort(key=lambda task: order.get(task.name.split(":")[0], len(order)))
        return super()._execute(subtasks, quiet, status, private, list_deps, template, sort, pos_args)


def _steps_named(name: str, tasks: dict) -> list[str]:
    """A step, or every adapter's step of a stage built per adapter (`finetune`)."""
    return [name] if name in tasks and tasks[name].actions else [t for t in tasks if t.startswith(f"{name}:")]


class Info(DoitInfo):
    cmd_options = (*DoitInfo.cmd_options, json_option("each step's state"))

    def _execute(self, pos_args, hide_status=False, json=False):  # noqa: A002  (doit passes options by name)
        refused = locked() if not hide_status else None
        if refused:
            return refused
        tasks = {task.name: task for task in self.task_list}
        # A stage built per adapter (`doit info finetune`): a line for each adapter's step.
        steps = [step for name in (pos_args if not hide_status else []) for step in _steps_named(name, tasks)]
        if json:
            found = []
            for step in steps:
                state, why = step_state(tasks[step], tasks, self.dep_manager)
                found.append({"step": step, "state": state, "why": why, "caveats": plan()[0].caveats(step)})
            self.outstream.write(jsonlib.dumps(found, indent=2) + "\n")
            return 0
        for step in steps:
            self._status_line(step, tasks)
        return super()._execute(pos_args, hide_status=hide_status)

    def _status_line(self, name: str, tasks: dict) -> None:
        if not any(isinstance(u, UpToDate) for u, *_ in tasks[name].uptodate):
            return
        state, why = step_state(tasks[name], tasks, self.dep_manager)
        if state == "up to date":
            self.outstream.write(f"{name}: up to date (its inputs, code and output are as built)\n")
        else:
            self.outstream.write(f"{name}: stale: {why}\n")
        for caveat in plan()[0].caveats(name):
            self.outstream.write(f"{name}: note: {caveat}\n")
