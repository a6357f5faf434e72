"""Running a sweep: every unit (a step several trials may share) once, in build order, restored
where a build with its fingerprint exists, built otherwise; the record rewritten after each.

`jobs` > 1 runs units whose upstream is done at once, as far as the machine allows: a unit that
computes on CUDA takes one visible GPU (CUDA_VISIBLE_DEVICES), one on the CPU the one CPU slot (a
stage already uses every core), one run as an Azure ML job nothing here. A failed unit fails the
trials that need it; the others go on (a failed trial keeps its reason and its log).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from tasks import ui
from tasks.engine import artifacts, runner, store
from tasks.experiments import record
from tasks.experiments.units import Unit, base_paths, locate, own_folder
from tasks.paths import split_step
from tasks.quality import figures

DONE = ("workspace", "cached", "built")
BROKEN = ("failed", "skipped")


def visible_gpus() -> list[str]:
    """The GPUs steps may be pinned to, as CUDA numbers them: CUDA_VISIBLE_DEVICES's entries, else
    every one the driver lists (`nvidia-smi -L`; device files are numbered otherwise in a container)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    count = sum(1 for line in found.stdout.splitlines() if line.startswith("GPU "))
    return [str(i) for i in range(count)] if found.returncode == 0 else []


def _resource(unit: Unit) -> str:
    """gpu | cpu | remote: what running the unit here takes."""
    if unit.params.jobs.remote(unit.stage.name):
        return "remote"
    devices = {k: v for k, v in (unit.fingerprint or {}).get("device", {}).items() if k != "dtype"}
    return "gpu" if "cuda" in devices.values() else "cpu"


class Sweep:
    def __init__(self, root, name: str, doc: dict, units: dict[str, Unit], steps_of: dict, jobs=1, fail_fast=False):
        self.root, self.name, self.doc = root, name, doc
        self.units, self.steps_of = units, steps_of
        self.jobs = max(1, jobs)
        self.fail_fast = fail_fast  # a failed step stops the sweep (by default the other trials go on)
        self.gpus = visible_gpus()
        self.free_gpus = list(self.gpus)
        self.cpu_free = True

    # -- one unit ---------------------------------------------------------------------------------
    def _restore(self, unit: Unit, how: str) -> bool:
        """Bring the unit back from where locate() found it (in place, or checked out)."""
        paths = base_paths(self.root, unit, self.units, self.name)
        target = paths if how == "workspace" else own_folder(paths, unit, self.name)
        canonical = paths.canonical(unit.step)
        try:
            doc, refused = store.restore(self.root, target.dvc_file(unit.step), unit.fingerprint, canonical)
        except Exception as exc:  # noqa: BLE001  (a broken cache: building is still right)
            doc, refused = None, [f"the DVC cache could not be read ({type(exc).__name__}: {exc})"]
        for why in refused:
            ui.console.print(f"   [yellow]cached build of {unit.step} not used[/]: {why}")
        if doc is None:
            return False
        self._placed(unit, target, how)
        return True

    def _placed(self, unit: Unit, paths, how: str) -> None:
        out = paths.output(unit.step)
        unit.folder = out.relative_to(self.root).as_posix()
        unit.md5 = store.content_hash(paths.dvc_file(unit.step))
        meta = (artifacts.read_yaml(paths.dvc_file(unit.step)) or {}).get("meta") or {}
        unit.metrics = {**meta.get("metrics", {}), **meta.get("details", {})}
        unit.seconds = unit.metrics.get("seconds", 0.0)  # what building it took, whenever that was
        unit.how = how

    def _build(self, unit: Unit, gpu: str | None) -> dict:
        unit.started = record.now()
        paths = own_folder(base_paths(self.root, unit, self.units, self.name), unit, self.name)
        # Progress bars when steps run one at a time; never the stages' own tables (answers, eval
        # figures): the sweep's results table has them, one row per trial.
        show = "none" if self.jobs > 1 else "bars"
        started = time.perf_counter()
        result = runner.build(
            unit.stage, unit.step, unit.plan, unit.params, paths, unit.fingerprint, publish=False, gpu=gpu, show=show
        )
        return {**result, "paths": paths, "seconds": round(time.perf_counter() - started, 2)}

    def _finish_build(self, unit: Unit, result: dict) -> None:
        if result.get("interrupted"):
            raise KeyboardInterrupt  # the record stays as after the last finished step
        unit.ended = record.now()
        if "error" in result:
            unit.how, unit.error = "failed", result["error"].split("\n  log: ")[0]  # the record names the log
        else:
            self._placed(unit, result["paths"], "built")
        mark = {"built": "[green]✔", "failed": "[red]✘"}[unit.how]
        ui.console.print(f"{mark} {unit.step}[/] [dim]{unit.label}[/] {unit.how} {result['seconds']:.1f}s")
        if unit.error:
            ui.console.print(f"  {result['error']}")

    # -- the schedule -----------------------------------------------------------------------------
    def _ready(self, unit: Unit) -> str | None:
        """'go' when its upstream is done, 'skip' when part of it failed, else None."""
        failed = [u for u in self.units.values() if u.how == "failed"]
        if self.fail_fast and failed:
            unit.how, unit.error = "skipped", f"not built: --fail-fast, {failed[0].step} ({failed[0].label}) failed"
            return "skip"
        ups = [self.units[i] for i in unit.upstream.values()]
        if any(u.how in BROKEN for u in ups):
            broken = next(u for u in ups if u.how in BROKEN)
            unit.how, unit.error = "skipped", f"not built: {broken.step} ({broken.label}) {broken.how}"
            return "skip"
        return "go" if all(u.how in DONE for u in ups) else None

    def _take(self, resource: str) -> tuple[bool, str | None]:
        if resource == "gpu" and self.free_gpus:
            return True, self.free_gpus.pop(0)
        if resource == "cpu" or (resource == "gpu" and not self.gpus):
            if self.cpu_free:
                self.cpu_free = False
                return True, None
            return False, None
        return resource == "remote", None

    def _give(self, resource: str, gpu: str | None) -> None:
        if gpu is not None:
            self.free_gpus.append(gpu)
        elif resource != "remote":
            self.cpu_free = True

    def run(self) -> dict:
        """Run every unit; the record after the last one."""
        from dvc.repo import Repo

        pending = list(self.units)
        running: dict = {}
        self._save()
        with Repo(str(self.root)) as self.repo, ThreadPoolExecutor(max_workers=self.jobs) as pool:
            while pending or running:
                started = [i for i in pending if self._start(i, pool, running)]
                for ident in started:
                    pending.remove(ident)
                if not running:
                    if not started:  # units are in build order: one can always start when none runs
                        raise RuntimeError(f"sweep {self.name}: no step can start ({len(pending)} left)")
                    continue
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    unit, resource, gpu = running.pop(future)
                    self._give(resource, gpu)
                    self._finish_build(unit, future.result())
                    self._save()
        return self.doc

    def _start(self, ident: str, pool, running: dict) -> bool:
        """Start the unit if it can start now: restore it here, or hand its build to the pool (or
        build it here when one runs at a time: Ctrl-C and SIGTERM then reach the stage process).
        True once it needs nothing more from the loop."""
        unit = self.units[ident]
        state = self._ready(unit)
        if state == "skip":
            self._save()
            return True
        if state is None or len(running) >= self.jobs:
            return False
        how, unit.fingerprint, _ = locate(self.repo, self.root, unit, self.units, self.name)
        if how != "build" and self._restore(unit, how):
            ui.console.print(f"[dim]↺ {unit.step} {unit.label} {how}[/]")
            self._save()
            return True
        resource = _resource(unit)
        taken, gpu = self._take(resource)
        if not taken:
            return False
        ui.console.print(f"[bold cyan]▶ {unit.step}[/] [dim]{unit.label} for {', '.join(unit.trials)}[/]")
        if self.jobs == 1:
            result = self._build(unit, gpu)
            self._give(resource, gpu)
            self._finish_build(unit, result)
            self._save()
        else:
            running[pool.submit(self._build, unit, gpu)] = (unit, resource, gpu)
        return True

    # -- the record -------------------------------------------------------------------------------
    def _trial(self, name: str) -> dict:
        steps, first_broken = {}, None
        for step, ident in self.steps_of[name].items():
            unit = self.units[ident]
            how = "shared" if unit.how in DONE and unit.trials[0] != name else unit.how
            steps[step] = {
                "unit": unit.label,
                "how": how,
                "fingerprint": store.key_of(unit.fingerprint)[:16] if unit.fingerprint else None,
                "md5": unit.md5,
                "seconds": unit.seconds,
                "folder": unit.folder,
                **({"built": [unit.started, unit.ended]} if unit.started else {}),
            }
            if unit.how in BROKEN and first_broken is None:
                first_broken = unit
        statuses = {u["how"] for u in steps.values()}
        status = "failed" if first_broken else ("done" if statuses <= {*DONE, "shared"} else "pending")
        trial = {**self.doc["trials"][name], "status": status, "steps": steps}
        # What the trial's own steps took to build (whenever they were): not the workspace's, not
        # another trial's it shares.
        trial["seconds"] = round(sum(s["seconds"] for s in steps.values() if s["how"] in ("built", "cached")), 2)
        trial["metrics"] = self._metrics(name)
        trial["error"] = first_broken.error if first_broken else None
        trial["log"] = (
            f"logs/experiments/{self.name}/{first_broken.label}/{first_broken.step.replace(':', '.')}.log"
            if first_broken and first_broken.how == "failed"
            else None
        )
        return trial

    def _metrics(self, name: str) -> dict:
        """{adapter: figures} from the trial's units."""
        by_adapter: dict[str, dict] = {}
        units = {step: self.units[i] for step, i in self.steps_of[name].items()}
        adapters = {split_step(s)[1] for s in units if split_step(s)[1]}
        for adapter in sorted(adapters):
            steps = {}
            for step, unit in units.items():
                stage, own = split_step(step)
                if own in (None, adapter) and unit.how in DONE:
                    steps[stage] = unit.metrics
            by_adapter[adapter] = figures.row(steps)
        return by_adapter

    def _save(self) -> None:
        self.doc["trials"] = {**self.doc["trials"], **{n: self._trial(n) for n in self.steps_of}}
        if all(t["status"] != "pending" for n, t in self.doc["trials"].items() if n in self.steps_of):
            self.doc["finished"] = record.now()
        record.save(self.root, self.name, self.doc)
