"""Every path of the build, derived from the project root, params.name and the stages' output folders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tasks.errors import StageError

DOIT_DB = ".doit.db"  # doit's record of each task (sqlite), relative to the project root
ADAPTER_FILE = "adapter_weights.onnx_adapter"  # the lab's name for the exported adapter, beside the model


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
    root: Path
    name: str
    outputs: dict[str, str] = field(default_factory=dict, hash=False)  # stage: folder ({name}: params.name)

    @property
    def models(self) -> Path:
        return self.root / "models" / self.name

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def output(self, stage: str) -> Path:
        """The folder a stage writes (each one DVC-tracked as a whole)."""
        return self.root / self.outputs[stage].format(name=self.name)

    def dvc_file(self, stage: str) -> Path:
        out = self.output(stage)
        return out.with_name(out.name + ".dvc")

    def metrics(self, stage: str) -> Path:
        """A stage's metrics (git-tracked, read by `dvc metrics show/diff` through dvc.yaml)."""
        return self.root / "models" / "metrics" / self.name / f"{stage}.json"

    def plots(self) -> Path:
        """CSV files for `dvc plots` (git-tracked, listed in dvc.yaml), copied from stage outputs."""
        return self.root / "models" / "plots" / self.name

    def log(self, stage: str) -> Path:
        return self.logs / f"{stage}.log"

    def inside(self, relpath: str, key: str) -> Path:
        """Resolve a path from params; refuse one that leaves the project."""
        path = (self.root / relpath).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"params.yaml: {key}: {relpath!r} is outside the project ({self.root})")
        return path
