"""`doit exp`: sweeps of params (experiments), their table, and taking a trial's build.

doit exp run -S finetune.lora_r=8,16 -S finetune.learning_rate=1e-4,2e-4 [--dry-run] [-j N]
doit exp show [SWEEP] [--sort ppl,-decode_tok_s] [--where 'size_mb <= 300'] [--json|--csv|--md]
doit exp best [SWEEP] --where ... --sort ...
doit exp apply TRIAL [--rebuild]
doit exp remove SWEEP [--trial TRIAL]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import sys

from doit.cmd_base import Command

from tasks import ui
from tasks.cli.guard import locked
from tasks.errors import ParamsError
from tasks.experiments import record, spec, table
from tasks.experiments.units import EXPERIMENTS
from tasks.paths import find_root

GRAMMAR = (
    "-S key=a,b,c sweeps a params key over values (YAML scalars: 8, 2e-4, true, [q_proj,v_proj]); "
    "-S key=range(start,stop[,step]) over a range (stop excluded). Any key of params.yaml: "
    "finetune.lora_r, quantize.q_group_size, adapters.<name>.finetune.lora_r, quantize.calibration, ... "
    "Several -S make a grid (every combination); --sample N --seed S draws N of them.",
    "A sweep file params/sweeps/<name>.yaml (`params: {finetune.lora_r: [8, 16]}`, optional `sample:`, "
    "`seed:`) runs with --sweep <name>. Trials are named by what they set: r16-lr2e-4.",
    "Each step several trials share is built once (trials differing only in finetune keys share data, base, "
    "quantize and export); steps built before come back from DVC's cache. --dry-run prints what each step "
    "will be. -j N builds steps of different trials at once, each on its own GPU (or as Azure ML jobs); on a "
    "CPU machine they run one after another. Running the same command again finishes a killed sweep. A failed "
    "trial does not stop the others (--fail-fast stops at the first failure).",
    "The record is models/experiments/<sweep>.json (commit it). Figures: ppl (ONNX model + adapter), ppl_base, "
    "ppl_rtn, ppl_awq, ppl_awq_adapter, answer_match, size_mb (ONNX model + adapter), onnx_mb, adapter_mb, "
    "awq_mb, decode_tok_s, ttft_ms, train_loss, and every figure evaluate records.",
    "--where 'size_mb <= 300 and decode_tok_s >= 40' keeps trials meeting it (numbers, + - * / **, comparisons, "
    "and/or/not, abs/min/max); --sort ppl,-decode_tok_s sorts on several keys (- descending). Params' gates: "
    "use the same language. ★ marks the Pareto front (ppl, size_mb, decode_tok_s) of the feasible trials.",
)
SWEEP_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doit exp", exit_on_error=False)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", exit_on_error=False)
    run.add_argument("-S", "--set", action="append", default=[], dest="overrides")
    run.add_argument("--sweep", help="a sweep file: params/sweeps/<name>.yaml")
    run.add_argument("--name", help="the sweep's name (default: the file's, or the swept keys')")
    run.add_argument("--sample", type=int)
    run.add_argument("--seed", type=int)
    run.add_argument("--dry-run", action="store_true")
    run.add_argument("-j", "--jobs", type=int, default=1)
    run.add_argument("--yes", action="store_true")
    run.add_argument("--fail-fast", action="store_true", help="stop at the first failed step (default: keep going)")
    for name in ("show", "best"):
        view = sub.add_parser(name, exit_on_error=False)
        view.add_argument("sweep", nargs="?")
        view.add_argument("--sort")
        view.add_argument("--where")
        for fmt in ("json", "csv", "md"):
            view.add_argument(f"--{fmt}", action="store_true")
    apply = sub.add_parser("apply", exit_on_error=False)
    apply.add_argument("trial")
    apply.add_argument("--sweep")
    apply.add_argument("--rebuild", action="store_true")
    remove = sub.add_parser("remove", exit_on_error=False)
    remove.add_argument("sweep")
    remove.add_argument("--trial")
    return parser


class Exp(Command):
    doc_purpose = "run sweeps of params (experiments), compare their trials, apply one"
    doc_usage = "run|show|best|apply|remove [options]  (see below)"
    doc_description = "\n".join([__doc__.split("\n\n", 1)[1].strip(), *GRAMMAR])

    def execute(self, opt_values, pos_args):
        try:
            args = _parser().parse_args(_own_args(pos_args))
        except (argparse.ArgumentError, SystemExit) as exc:
            if isinstance(exc, SystemExit):
                return 2
            ui.console.print(f"[bold red]error:[/] {exc}\n{self.doc_usage}")
            return 2
        try:
            return COMMANDS[args.command](find_root(), args)
        except ParamsError as exc:
            ui.console.print(f"[bold red]error:[/] {exc}")
            return 2


def _own_args(pos_args: list[str]) -> list[str]:
    """The command line after `exp`, as typed: doit takes every `name=value` word for one of its own
    variables (`-S finetune.lora_r=8` would lose its value), so they are read from sys.argv."""
    argv = sys.argv[1:]
    if "exp" in argv and argv[argv.index("exp") + 1 : argv.index("exp") + 2] == pos_args[:1]:
        pos_args = argv[argv.index("exp") + 1 :]
    joined = []  # `--sort -decode_tok_s`: a value that starts with '-' is the option's, not an option
    for arg in pos_args:
        if joined and joined[-1] in ("--sort", "--where") and arg.startswith("-"):
            joined[-1] = f"{joined[-1]}={arg}"
        else:
            joined.append(arg)
    return joined


def _grid(root, args) -> tuple[str, dict, dict]:
    """(sweep name, grid, run options) from a sweep file and -S options (they add to the file's)."""
    grid, sample, seed = {}, args.sample, args.seed
    name = args.name
    if args.sweep:
        path = root / spec.SWEEPS / f"{args.sweep}.yaml"
        if not re.fullmatch(SWEEP_NAME, args.sweep) or not path.is_file():
            known = sorted(p.stem for p in (root / spec.SWEEPS).glob("*.yaml"))
            raise ParamsError(f"{path}: no such sweep file; sweep files: {', '.join(known) or 'none'}")
        found = spec.read_sweep_file(path, path.read_text(encoding="utf-8"))
        grid, sample = found["grid"], sample if sample is not None else found["sample"]
        seed = seed if seed is not None else found["seed"]
        name = name or args.sweep
    grid |= dict(spec.parse_override(option) for option in args.overrides)
    if not grid:
        raise ParamsError("nothing to sweep: give -S key=a,b (or --sweep <file>)")
    name = name or spec.sweep_name(grid)
    if not re.fullmatch(SWEEP_NAME, name):
        raise ParamsError(f"sweep name {name!r}: letters, digits, '.', '_' and '-' only")
    options = {"sample": sample, "seed": seed or 0, "dry_run": args.dry_run, "jobs": args.jobs, "yes": args.yes}
    options["fail_fast"] = args.fail_fast
    return name, grid, options


def run(root, args) -> int:
    from tasks.experiments.launch import start

    name, grid, options = _grid(root, args)
    refused = None if args.dry_run else locked()
    if refused:
        return refused
    try:
        code = start(root, name, grid, options)
    except KeyboardInterrupt:
        ui.console.print(f"[yellow]sweep {name} interrupted[/]: run the same command again to finish it")
        return 130
    if not args.dry_run:
        _print_table(root, name, record.load(root, name), None, None)
    return code


def _current_figures() -> dict[str, dict]:
    """{adapter: figures} of the workspace's build, for deltas (none when params are broken)."""
    from tasks.pipeline import plan
    from tasks.quality.gates import adapter_values

    try:
        paths = plan()[1]
    except ParamsError:
        return {}
    return {adapter: adapter_values(paths, adapter) for adapter in paths.adapters}


def _gates() -> dict:
    from tasks.pipeline import plan

    try:
        return plan()[0].gates
    except ParamsError:
        return {}


def _judged(root, args) -> tuple[str, list[dict]]:
    name, doc = record.find(root, args.sweep)
    found = table.rows(doc, _current_figures())
    table.require_rows(found, name)
    return name, table.ordered(table.judge(found, args.where, _gates()), args.sort)


def _print_table(root, name: str, doc: dict, where, sort) -> None:
    found = table.ordered(table.judge(table.rows(doc, _current_figures()), where, _gates()), sort)
    if found:
        ui.console.print(table.as_rich(found, f"sweep {name} (deltas against the current build)"))


def show(root, args) -> int:
    name, found = _judged(root, args)
    if args.json:
        print(json.dumps({"sweep": name, "trials": found}, indent=2))  # noqa: T201  (data for other programs)
    elif args.csv:
        print(table.as_csv(found), end="")  # noqa: T201
    elif args.md:
        print(table.as_markdown(found), end="")  # noqa: T201
    else:
        ui.console.print(table.as_rich(found, f"sweep {name} (deltas against the current build)"))
    return 0


def best(root, args) -> int:
    name, found = _judged(root, args)
    feasible = [r for r in found if r["feasible"]]
    if not feasible:
        ui.console.print(
            f"[bold red]no trial of {name} is feasible[/]: "
            + "; ".join(f"{r['trial']}: {', '.join(r['infeasible_because'])}" for r in found)
        )
        return 1
    pick = feasible[0]
    if args.json:
        print(json.dumps(pick, indent=2))  # noqa: T201
    else:
        print(pick["trial"])  # noqa: T201  (for scripts: doit exp apply $(doit exp best ...))
    return 0


def apply(root, args) -> int:
    from tasks.experiments.launch import params_file, rebuilds
    from tasks.experiments.params_edit import set_keys

    sweep, _, trial = record.find_trial(root, args.trial, args.sweep)
    refused = locked()
    if refused:
        return refused
    missing = rebuilds(root, sweep, trial["overrides"])
    if missing and not args.rebuild:
        raise ParamsError(
            f"trial {args.trial}: {', '.join(missing)} would be rebuilt (not in DVC's cache, or the code changed "
            "since the sweep); apply it anyway with --rebuild"
        )
    set_keys(params_file(root), trial["overrides"])
    shown = ", ".join(f"{k}={v}" for k, v in trial["overrides"].items())
    ui.console.print(f"{params_file(root).name}: {shown} (trial {args.trial} of sweep {sweep})")
    return _build(root)


def _build(root) -> int:
    """A plain `doit` in this process, on the params just written."""
    import importlib.util

    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from tasks.pipeline import read_again

    read_again()
    found = importlib.util.spec_from_file_location("dodo", root / "dodo.py")
    dodo = importlib.util.module_from_spec(found)
    found.loader.exec_module(dodo)
    with contextlib.chdir(root):  # doit reads [tool.doit] (the project's commands) only from ./pyproject.toml
        return DoitMain(ModuleTaskLoader(vars(dodo)), config_filenames=["pyproject.toml"]).run([])


def remove(root, args) -> int:
    name, doc = record.find(root, args.sweep)
    refused = locked()
    if refused:
        return refused
    if args.trial:
        if args.trial not in doc["trials"]:
            record.find_trial(root, args.trial, name)  # raises, naming the trials there are
        del doc["trials"][args.trial]
        record.save(root, name, doc)
        ui.console.print(f"removed trial {args.trial} from sweep {name} (its builds stay in DVC's cache)")
        return 0
    record.path(root, name).unlink()
    for folder in (root / EXPERIMENTS / name, root / "logs" / "experiments" / name):
        shutil.rmtree(folder, ignore_errors=True)
    ui.console.print(f"removed sweep {name}: its record, its trials' folders and logs (DVC's cache keeps the builds)")
    return 0


COMMANDS = {"run": run, "show": show, "best": best, "apply": apply, "remove": remove}
