"""Stage outputs on disk: written aside and renamed into place, records replaced atomically, file stats."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import yaml

from tasks.paths import is_per_adapter

try:  # the C loader is ~10x faster; a no-op build reads every .dvc file
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader


FAILPOINT_ENV = "LAB_FAILPOINT"


def failpoint(point: str) -> None:
    """Fault-injection hook for tests: LAB_FAILPOINT=<stage>:<point>[:parent] SIGKILLs that stage's
    process (or the doit run that started it) at `point`. Unset in normal use: a no-op."""
    wanted = os.environ.get(FAILPOINT_ENV, "").split(":")
    if wanted[:2] == [os.environ.get("LAB_STAGE"), point]:
        os.kill(os.getppid() if wanted[2:] == ["parent"] else os.getpid(), signal.SIGKILL)
        time.sleep(5)  # the parent's death reaches us through PR_SET_PDEATHSIG


@contextlib.contextmanager
def staging(final: Path):
    """Yield an empty folder beside `final`; it replaces `final` only if the block succeeds.

    A failed or killed stage leaves at most a `.tmp-*` folder, never something that looks finished.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in [*final.parent.glob(f".tmp-{final.name}-*"), *final.parent.glob(f".old-{final.name}-*")]:
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run; the run lock excludes a live one
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    try:
        tmp.mkdir()
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    failpoint("staged")
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    failpoint("renamed")


def read_yaml(path: Path) -> dict | None:
    """The parsed YAML file, or None when it is missing or unreadable."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, yaml.YAMLError):
        return None


def write_text(path: Path, text: str) -> None:
    """Replace `path` in one rename, so a reader never sees half a file. Its folder is made if it
    is missing (a run-cache restore after `rm -rf models/<name>` writes the .dvc file first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_yaml(path: Path, doc: dict) -> None:
    write_text(path, yaml.safe_dump(doc, sort_keys=False))


def write_json(path: Path, doc: dict) -> None:
    write_text(path, json.dumps(doc, indent=2) + "\n")


def read_json(path: Path) -> dict | None:
    """The parsed JSON file, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def file_stats(folder: Path) -> dict[str, list[int]]:
    """{relative path: [size, mtime_ns]} of every file under `folder`."""
    stats = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = Path(dirpath) / name
            st = path.stat()
            stats[path.relative_to(folder).as_posix()] = [st.st_size, st.st_mtime_ns]
    return stats


def sweep_leftovers(paths) -> list[Path]:
    """Remove what killed runs left: the staging (`.tmp-*`) and replaced (`.old-*`) folders beside
    each stage output and the stages' scratch folders (`models/<name>/.<stage>-*`), gigabytes at full
    size. Call it only under the run lock, where no build is live; returns what it removed."""
    stale = []
    for step in paths.steps():
        out = paths.output(step)
        stale += [*out.parent.glob(f".tmp-{out.name}-*"), *out.parent.glob(f".old-{out.name}-*")]
    for stage in paths.outputs:
        stale += paths.models.glob(f".{stage}-*")
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def removed_adapters(paths) -> dict[str, list[Path]]:
    """{adapter: its outputs, .dvc files and records} for each adapter built here that params no
    longer name (found by the .dvc files beside the per-adapter output folders)."""
    found: dict[str, list[Path]] = {}
    for template in paths.outputs.values():
        if not is_per_adapter(template):
            continue
        pattern = template.format(name=paths.name, adapter="*") + ".dvc"
        for dvc_file in paths.root.glob(pattern):
            adapter = dvc_file.name.removesuffix(".dvc")
            if adapter not in paths.adapters:
                found.setdefault(adapter, []).extend([dvc_file.with_name(adapter), dvc_file])
    for adapter, items in found.items():
        items += [paths.records(adapter), paths.plots(adapter)]
    return found


def remove_adapters(paths) -> dict[str, list[Path]]:
    """Take the outputs of adapters removed from params out of the build (DVC's cache and the
    run-cache keep them: naming the adapter again restores them). Only under the run lock."""
    found = removed_adapters(paths)
    for items in found.values():
        for path in items:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
    return found
