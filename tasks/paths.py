"""Every path of the build, derived from the project root, params.name and the stages' output folders."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from tasks.errors import StageError

DOIT_DB = ".doit.db"  # doit's record of each task (sqlite), relative to the project root
ADAPTER_FILE = "adapter_weights.onnx_adapter"  # the lab's name for an exported adapter, in its own folder


def is_per_adapter(folder: str) -> bool:
    """Whether a stage's output folder (a template) is built once per adapter."""
    return "{adapter}" in folder


def step_name(stage: str, adapter: str | None = None) -> str:
    """A unit of the build: a stage (`export`), or a stage of one adapter (`finetune:travel`), which
    is also its doit task name."""
    return f"{stage}:{adapter}" if adapter else stage


def split_step(step: str) -> tuple[str, str | None]:
    """(stage, adapter or None) of a step name."""
    stage, _, adapter = step.partition(":")
    return stage, adapter or None


def find_root(start: Path | None = None) -> Path:
    """The project you stand in: the nearest folder holding dodo.py, from `start` (the cwd) up;
    the cwd itself when there is none. Every command acts on it, whichever checkout's
    environment runs it."""
    here = (start or Path.cwd()).resolve()
    return next((folder for folder in (here, *here.parents) if (folder / "dodo.py").is_file()), here)


def leaves(folder: Path, name: str) -> bool:
    """Whether `folder / name` is not a path strictly inside `folder`: empty, absolute, or `..`
    segments (symbolic links too) that lead out."""
    base = folder.resolve()
    target = (base / name).resolve()
    return not name or target == base or not target.is_relative_to(base)


def within(folder: Path, name: str, what: str) -> Path:
    """`folder / name` for a name that comes from outside the build (a blob, a run-cache entry, a
    hub file): refused, with the name shown, when it leaves `folder` (a remote must never write
    elsewhere on this machine)."""
    if leaves(folder, name):
        raise StageError(f"{what} {name!r} would be written outside {folder}: refused")
    return (folder.resolve() / name).resolve()


@dataclass(frozen=True)
class Paths:
    """Folders are per step: `output("finetune:travel")`; a stage name alone means the adapter this
    Paths is for (a per-adapter stage's process gets `for_adapter(name)`), or a stage of the model."""

    root: Path
    name: str
    # stage: folder ({name}: params.name; {adapter}: the adapter's name, for a stage of each adapter)
    outputs: dict[str, str] = field(default_factory=dict, hash=False)
    adapters: tuple[str, ...] = ()  # the build's adapters, in params order
    adapter: str | None = None  # the adapter whose stage is running, if any
    # step: folder relative to the root, in place of its stage's (an experiment's trial builds a
    # step the workspace does not hold in a folder of its own: tasks/experiments/)
    folders: dict[str, str] = field(default_factory=dict, hash=False)
    log_folder: str = "logs"  # relative to the root

    def for_adapter(self, adapter: str | None) -> "Paths":
        return replace(self, adapter=adapter)

    def steps(self) -> list[str]:
        """Every step of the build in stage order, each adapter's in params order."""
        return [s for stage in self.outputs for s in self.steps_of(stage)]

    def steps_of(self, stage: str) -> list[str]:
        return [step_name(stage, a) for a in self.adapters] if is_per_adapter(self.outputs[stage]) else [stage]

    def _adapter_of(self, step: str) -> tuple[str, str | None]:
        """(stage, adapter): the adapter named, or this Paths' for a stage built per adapter."""
        stage, adapter = split_step(step)
        if not is_per_adapter(self.outputs[stage]):
            return stage, None
        adapter = adapter or self.adapter
        if not adapter:
            raise ValueError(f"{stage} is built per adapter: name one ({stage}:<adapter>)")
        return stage, adapter

    @property
    def models(self) -> Path:
        return self.root / "models" / self.name

    @property
    def logs(self) -> Path:
        return self.root / self.log_folder

    def output(self, step: str) -> Path:
        """The folder a step writes (each one DVC-tracked as a whole)."""
        stage, adapter = self._adapter_of(step)
        placed = self.folders.get(step_name(stage, adapter))
        return self.root / placed if placed else self.canonical(step)

    def canonical(self, step: str) -> Path:
        """The step's folder in the workspace, wherever this Paths places it: the run-cache files
        its builds under this name, so a build made in a trial's folder restores into the workspace."""
        stage, adapter = self._adapter_of(step)
        return self.root / self.outputs[stage].format(name=self.name, adapter=adapter)

    def dvc_file(self, step: str) -> Path:
        out = self.output(step)
        return out.with_name(out.name + ".dvc")

    def adapter_file(self, adapter: str) -> Path:
        """An adapter's `.onnx_adapter` file (the adapter stage's output)."""
        return self.output(step_name("adapter", adapter)) / ADAPTER_FILE

    def records(self, adapter: str | None = None) -> Path:
        """The folder of a build's git-tracked metrics (`dvc metrics show/diff` through dvc.yaml):
        models/metrics/<name>/, and a folder in it per adapter."""
        folder = self.root / "models" / "metrics" / self.name
        return folder / adapter if adapter else folder

    def metrics(self, step: str) -> Path:
        """A step's metrics file."""
        stage, adapter = self._adapter_of(step)
        return self.records(adapter) / f"{stage}.json"

    def plots(self, adapter: str | None = None) -> Path:
        """CSV files for `dvc plots` (git-tracked, listed in dvc.yaml), copied from stage outputs."""
        folder = self.root / "models" / "plots" / self.name
        return folder / adapter if adapter else folder

    def log(self, step: str) -> Path:
        return self.logs / f"{step.replace(':', '.')}.log"

    def inside(self, relpath: str, key: str) -> Path:
        """Resolve a path from params; refuse one that leaves the project."""
        path = (self.root / relpath).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"params.yaml: {key}: {relpath!r} is outside the project ({self.root})")
        return path
