"""Every path of the build, derived from the project root and params.name (the lab's layout)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOIT_DB = ".doit.db"  # doit's record of each task (sqlite), relative to the project root


@dataclass(frozen=True)
class Paths:
    root: Path
    name: str

    @property
    def models(self) -> Path:
        return self.root / "models" / self.name

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def output(self, stage: str) -> Path:
        """The folder a stage writes (each one DVC-tracked as a whole)."""
        return {
            "data": self.root / "data" / "prepared",
            "base": self.models / "base",
            "quantize": self.models / "awq",
            "finetune": self.models / "ft" / "adapter",
            "export": self.models / "onnx-ao" / "model",
            "smoke": self.models / "smoke",
            "evaluate": self.models / "eval",
            "register": self.models / "registry",
        }[stage]

    def dvc_file(self, stage: str) -> Path:
        out = self.output(stage)
        return out.with_name(out.name + ".dvc")

    def metrics(self, stage: str) -> Path:
        """A stage's metrics (git-tracked, read by `dvc metrics show/diff` through dvc.yaml)."""
        return self.root / "models" / "metrics" / self.name / f"{stage}.json"

    def plots(self) -> Path:
        """CSV files for `dvc plots` (git-tracked, listed in dvc.yaml), copied from stage outputs."""
        return self.root / "models" / "plots" / self.name

    def registry(self) -> Path:
        """The registered name and version of the build's model (git-tracked)."""
        return self.root / "models" / "registry" / f"{self.name}.json"

    def log(self, stage: str) -> Path:
        return self.logs / f"{stage}.log"

    def inside(self, relpath: str, key: str) -> Path:
        """Resolve a path from params; refuse one that leaves the project."""
        path = (self.root / relpath).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"params.yaml: {key}: {relpath!r} is outside the project ({self.root})")
        return path
