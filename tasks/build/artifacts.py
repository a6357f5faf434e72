"""Stage outputs: written aside and renamed into place, tracked with DVC, checked cheaply for damage."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import yaml

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
    tmp.mkdir()
    try:
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


def _replace(path: Path, text: str) -> None:
    """Replace `path` in one rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_yaml(path: Path, doc: dict) -> None:
    _replace(path, yaml.safe_dump(doc, sort_keys=False))


def write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace(path, json.dumps(doc, indent=2) + "\n")


def content_hash(dvc_file: Path) -> str | None:
    """DVC's content hash of an artifact (md5 of its .dir manifest), read from its .dvc file."""
    doc = read_yaml(dvc_file)
    try:
        return doc["outs"][0]["md5"]
    except (TypeError, KeyError, IndexError):
        return None


def dvc_track(root: Path, out: Path, meta: dict) -> None:
    """`dvc add` the folder, store the build record in the `meta:` field of its .dvc file, and
    file that record in the run-cache."""
    from dvc.repo import Repo

    from tasks import runcache

    with Repo(str(root)) as repo:
        repo.add(str(out))
        failpoint("dvc-added")
        dvc_file = out.with_name(out.name + ".dvc")
        write_yaml(dvc_file, {**read_yaml(dvc_file), "meta": meta})
        runcache.save(repo, root, dvc_file)


def publish_records(paths, stage: str, metrics: dict) -> None:
    """The git-tracked side of a build, for `dvc metrics` and `dvc plots` at any revision: the
    stage's metrics file, copies of the CSV files it left under `plots/` in its output, and the
    registry record of register."""
    write_json(paths.metrics(stage), metrics)
    registered = paths.output(stage) / "model.json"
    if stage == "register" and registered.is_file():
        paths.registry().parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(registered, paths.registry())
    plots = paths.output(stage) / "plots"
    if plots.is_dir():
        paths.plots().mkdir(parents=True, exist_ok=True)
        for source in plots.iterdir():
            shutil.copyfile(source, paths.plots() / source.name)


def file_stats(folder: Path) -> dict[str, list[int]]:
    """{relative path: [size, mtime_ns]} of every file under `folder`."""
    stats = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = Path(dirpath) / name
            st = path.stat()
            stats[path.relative_to(folder).as_posix()] = [st.st_size, st.st_mtime_ns]
    return stats


def _dir_manifest(root: Path, dir_md5: str) -> dict[str, str]:
    """{relpath: md5} from DVC's cache entry for a tracked folder."""
    obj = root / ".dvc" / "cache" / "files" / "md5" / dir_md5[:2] / dir_md5[2:]
    entries = json.loads(obj.read_text())
    return {e["relpath"]: e["md5"] for e in entries}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def damage(root: Path, out: Path, dvc_file: Path, recorded: dict[str, list[int]]) -> tuple[str | None, dict]:
    """(why the artifact differs from what was built, or None if intact; its current file stats).

    Sizes and mtimes decide; only files whose stat changed are re-hashed against DVC's manifest.
    """
    if not out.is_dir():
        return f"{out} is missing", {}
    current = file_stats(out)
    if set(current) != set(recorded):
        changed = sorted(set(current) ^ set(recorded))
        return f"files added or removed in {out}: {', '.join(changed[:3])}", current
    moved = [rel for rel, st in current.items() if st != recorded[rel]]
    if not moved:
        return None, current
    try:
        manifest = _dir_manifest(root, content_hash(dvc_file) or "")
    except (OSError, ValueError):
        return f"{out}: {moved[0]} changed and DVC's manifest is unavailable", current
    for rel in moved:
        if manifest.get(rel) != _md5(out / rel):
            return f"{out / rel} was modified after the build", current
    return None, current
