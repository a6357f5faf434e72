"""`make setup TORCH=system`: let the project's venv use the torch this interpreter imports (a GPU
image's CUDA build), and nothing else of this interpreter's environment.

    python tasks/cli/system_torch.py VENV_SITE_PACKAGES

links torch and every installed distribution it requires (its NVIDIA libraries, triton, ...) into
VENV/system-torch/ and names that folder in a .pth file. The venv's own site-packages come first on
sys.path, so the project's pins installed there win over the linked ones; pip sees torch as installed
and leaves it. Seeing the whole system site-packages instead (`venv --system-site-packages`) would
also satisfy pytest or doit from there, and their commands would be missing from .venv/bin.
Standard library only: it runs before the venv has anything.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path


def closure(name: str = "torch") -> dict[str, metadata.Distribution]:
    """`name` and the installed distributions it requires, transitively, with the extras each
    requirement asks for (torch needs `cuda-toolkit[cudart, ...]`: the NVIDIA libraries are its extras)."""
    found: dict[str, metadata.Distribution] = {}
    todo = [(name, frozenset())]
    seen = set()
    while todo:
        wanted, extras = todo.pop()
        key = re.sub(r"[-_.]+", "-", wanted).lower()
        if (key, extras) in seen:
            continue
        seen.add((key, extras))
        try:
            dist = found.get(key) or metadata.distribution(key)
        except metadata.PackageNotFoundError:
            continue  # an optional requirement this machine does not have
        found[key] = dist
        for requirement in dist.requires or []:
            spec, _, marker = requirement.partition(";")
            if marker and not _applies(marker, extras):
                continue
            m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[([^\]]*)\])?", spec)
            todo.append((m[1], frozenset(e.strip() for e in (m[2] or "").split(",") if e.strip())))
    return found


def _applies(marker: str, extras: frozenset) -> bool:
    """A requirement's environment marker, for the extras its dependant asked for."""
    try:
        from packaging.markers import Marker
    except ImportError:  # link it anyway: a distribution too many is harmless, the venv's pins come first
        return True
    return any(Marker(marker).evaluate({"extra": extra}) for extra in extras or {""})


def top_levels(dist: metadata.Distribution) -> set[Path]:
    """The site-packages entries a distribution installed (packages, modules, its .dist-info)."""
    site = Path(dist.locate_file(""))
    firsts = {Path(f).parts[0] for f in dist.files or []}
    return {site / name for name in firsts if not name.startswith("..") and name != "__pycache__"}


def precompile(links: list[Path]) -> int:
    """Byte-compile the linked packages where the image left no .pyc, where imports through the links
    look: a package's own __pycache__ (through its link), a module's beside its link. A GPU image
    often ships none and runs with PYTHONDONTWRITEBYTECODE=1: then every stage process compiled
    torch and sympy again, 6-8 s each on the H200 (BENCHMARKS.md). Up-to-date .pyc files are left
    alone. Returns how many packages had a file it could not compile or write (a read-only image:
    imports work, only slower)."""
    import compileall

    failed = 0
    for link in links:
        real = link.resolve()
        if real.is_dir():
            failed += not compileall.compile_dir(real, quiet=2, workers=0)
        elif real.suffix == ".py":
            failed += not compileall.compile_file(link, quiet=2)
    return failed


def main(venv_site: str) -> None:
    target = Path(venv_site) / "system-torch"
    target.mkdir(exist_ok=True)
    dists = closure()
    if "torch" not in dists:
        sys.exit(f"TORCH=system: {sys.executable} imports no torch")
    for dist in dists.values():
        for entry in top_levels(dist):
            link = target / entry.name
            if entry.exists() and not link.exists():
                link.symlink_to(entry)
    (Path(venv_site) / "system-torch.pth").write_text(f"{target}\n")
    where = dists["torch"].locate_file("")
    unwritable = precompile(sorted(target.iterdir()))
    sys.stdout.write(
        f"TORCH=system: torch {dists['torch'].version} and {len(dists) - 1} distributions it needs, from {where}"
        + (f" ({unwritable} with files not byte-compiled)" if unwritable else "")
        + "\n"
    )


if __name__ == "__main__":
    main(sys.argv[1])
