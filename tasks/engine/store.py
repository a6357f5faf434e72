"""The DVC store: tracking a stage's output (`dvc add` + its build record), checking it against DVC's
manifest, and bringing earlier builds back from DVC's cache without recompute (the run-cache).

Every finished build leaves an entry in DVC's run-cache folder (`.dvc/cache/runs/<key[:2]>/<key>/`),
in DVC's own run-cache format, so DVC's run-cache transfer carries the entries (`doit push` sends
the objects they name too; a restore fetches missing ones from the remote). The key is the sha256 of
the stage's fingerprint (the same record that decides staleness), so an entry is only ever used for
exactly the inputs it was built from.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import shutil
from pathlib import Path

import yaml

from tasks.engine import artifacts
from tasks.paths import split_step


def content_hash(dvc_file: Path) -> str | None:
    """DVC's content hash of an artifact (md5 of its .dir manifest), read from its .dvc file."""
    doc = artifacts.read_yaml(dvc_file)
    try:
        return doc["outs"][0]["md5"]
    except (TypeError, KeyError, IndexError):
        return None


@contextlib.contextmanager
def one_at_a_time(root: Path):
    """One DVC operation at a time in this checkout: steps of an experiment's trials run at once
    (`doit exp run -j N`), and DVC's own lock gives up after a few seconds."""
    path = root / ".dvc" / "tmp" / "lab-store.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def dvc_track(root: Path, out: Path, meta: dict, canonical: Path | None = None) -> None:
    """`dvc add` the folder, store the build record in the `meta:` field of its .dvc file, and
    file that record in the run-cache (under `canonical`, the step's workspace folder, when the
    folder is a trial's)."""
    from dvc.repo import Repo

    with one_at_a_time(root), Repo(str(root)) as repo:
        repo.add(str(out))
        artifacts.failpoint("dvc-added")
        dvc_file = out.with_name(out.name + ".dvc")
        artifacts.write_yaml(dvc_file, {**artifacts.read_yaml(dvc_file), "meta": meta})
        save(repo, root, dvc_file, canonical)


def publish_records(paths, step: str, meta: dict, tracked_copies=()) -> None:
    """The git-tracked side of a build, for `dvc metrics` and `dvc plots` at any revision: the
    step's metrics file (its numbers and the words it resolved, e.g. a hub model's commit),
    copies of the CSV files it left under `plots/` in its output, and the files the stage asks to
    be copied (Stage.tracked_copies)."""
    artifacts.write_json(paths.metrics(step), {**meta.get("metrics", {}), **meta.get("details", {})})
    out = paths.output(step)
    plots = paths.plots(split_step(step)[1])
    for name, target in tracked_copies:
        if (out / name).is_file():
            dest = paths.root / target.format(name=paths.name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / name, dest)
    if (out / "plots").is_dir():
        plots.mkdir(parents=True, exist_ok=True)
        for source in (out / "plots").iterdir():
            shutil.copyfile(source, plots / source.name)


@functools.cache
def cache_dir(root: Path) -> Path:
    """The repository's DVC cache folder as DVC's config says (`dvc cache dir`: a team's shared
    cache, or one several checkouts share), at any config level; `.dvc/cache` by default. Read
    only when a file's stats moved, never on a no-op build."""
    from dvc.config import Config

    configured = Config(dvc_dir=str(root / ".dvc"))["cache"].get("dir")
    return Path(configured) if configured else root / ".dvc" / "cache"


def _dir_manifest(root: Path, dir_md5: str) -> dict[str, str]:
    """{relpath: md5} from DVC's cache entry for a tracked folder."""
    obj = cache_dir(root) / "files" / "md5" / dir_md5[:2] / dir_md5[2:]
    entries = json.loads(obj.read_text())
    return {e["relpath"]: e["md5"] for e in entries}


def unsafe_relpath(relpath) -> bool:
    """Whether a manifest's file name could write outside its folder: not a string, empty, absolute,
    or with an empty, `.` or `..` part (DVC's checkout joins it to the folder as it comes)."""
    if not isinstance(relpath, str) or not relpath or relpath.startswith("/") or "\\" in relpath:
        return True
    return any(part in ("", ".", "..") for part in relpath.split("/"))


def _md5(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def damage(root: Path, out: Path, dvc_file: Path, recorded: dict[str, list[int]]) -> tuple[str | None, dict]:
    """(why the artifact differs from what was built, or None if intact; its current file stats).

    Sizes and mtimes decide; only files whose stat changed are re-hashed against DVC's manifest.
    """
    if not out.is_dir():
        return f"{out.relative_to(root)} is missing", {}
    current = artifacts.file_stats(out)
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


def key_of(fingerprint: dict) -> str:
    """A fingerprint's run-cache key."""
    from dvc.utils import dict_sha256

    return dict_sha256(fingerprint)


def _runs_dir(repo) -> Path:
    return Path(repo.cache.legacy.path) / "runs"


def save(repo, root: Path, dvc_file: Path, canonical: Path | None = None) -> None:
    """Record the build a .dvc file describes under its fingerprint's key, for its workspace
    folder (`canonical`, where that is not the folder the .dvc file tracks)."""
    from dvc.utils import dict_sha256

    doc = artifacts.read_yaml(dvc_file)
    meta = doc["meta"]
    out = dict(doc["outs"][0])
    out["path"] = (canonical or dvc_file.parent / out["path"]).relative_to(root).as_posix()
    entry = {"cmd": f"doit {meta['stage']}", "params": {"lab": meta}, "outs": [out]}
    folder = _runs_dir(repo) / (key := key_of(meta["fingerprint"]))[:2] / key
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / dict_sha256(entry)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(entry, sort_keys=False), encoding="utf-8")
        tmp.replace(path)


def entry_files(repo) -> list[Path]:
    runs = _runs_dir(repo)
    return [p for p in runs.glob("*/*/*") if p.is_file()] if runs.is_dir() else []


def entries(repo, fingerprint: dict, output: str) -> list[dict]:
    """.dvc documents of earlier builds with exactly this fingerprint, newest first. Only entries
    for `output` (the stage's own folder, relative to the project) count: an entry is data from
    the cache or a remote, and its `path` must never choose where a checkout writes."""
    folder = _runs_dir(repo) / (key := key_of(fingerprint))[:2] / key
    found = sorted(folder.glob("*"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    docs = []
    for path in found:
        entry = artifacts.read_yaml(path)
        try:
            meta, out = entry["params"]["lab"], dict(entry["outs"][0])
        except (TypeError, KeyError, IndexError):
            continue  # not ours, or damaged: never used
        if meta.get("fingerprint") == fingerprint and out.get("path") == output and is_md5(out.get("md5")):
            # Only the hash fields go into the .dvc file: an entry's other keys (cache: false,
            # remote: ..., push: ...) would tell DVC how to treat the output.
            kept = {key: out[key] for key in OUT_FIELDS if key in out}
            docs.append({"outs": [kept | {"path": Path(output).name}], "meta": meta})
    return docs


OUT_FIELDS = ("md5", "size", "nfiles", "hash")  # what a .dvc file's out takes from a run-cache entry


def is_md5(value, suffix: str = ".dir") -> bool:
    """A DVC md5 as it must look (a folder's ends in .dir): never a path."""
    return (
        isinstance(value, str)
        and len(value) == 32 + len(suffix)
        and value.endswith(suffix)
        and all(c in "0123456789abcdef" for c in value[:32])
    )


def drop_entries(repo, fingerprint: dict) -> int:
    """Remove the run-cache entries filed under a fingerprint (`doit forget --drop-cache`): that
    build is never restored from them again. Returns how many there were."""
    folder = _runs_dir(repo) / (key := key_of(fingerprint))[:2] / key
    found = [p for p in folder.glob("*") if p.is_file()] if folder.is_dir() else []
    for path in found:
        path.unlink()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return len(found)


MISSING = "not in the DVC cache (nor on the remote)"


def _listing(repo, dir_md5: str) -> list:
    return json.loads(Path(repo.cache.local.oid_to_path(dir_md5)).read_text())


def manifest_problem(repo, dir_md5: str) -> str | None:
    """Why a folder's manifest (from a remote, or named by a run-cache entry) must not be used, or
    None. DVC joins each file's name to the folder and each object's hash to the cache folder as
    they come, so every name must stay inside the folder and every hash be a hash."""
    try:
        listing = _listing(repo, dir_md5)
    except (OSError, ValueError):
        return "its manifest cannot be read"
    if not isinstance(listing, list) or not all(isinstance(e, dict) for e in listing):
        return "its manifest is not a list of files"
    names = [e.get("relpath") for e in listing if unsafe_relpath(e.get("relpath"))]
    if names:
        return f"its manifest names the file {names[0]!r}, which leaves the folder: refused"
    hashes = [e.get("md5") for e in listing if not is_md5(e.get("md5"), "")]
    return f"its manifest names the object {hashes[0]!r}, which is no md5 hash: refused" if hashes else None


def object_ids(repo, dir_md5: str) -> list:
    """The folder's manifest object and every file object it lists (DVC's transfer of a `.dir`
    hash alone moves only the manifest). Only for a manifest manifest_problem passed."""
    from dvc_data.hashfile.hash_info import HashInfo

    return [HashInfo("md5", dir_md5), *(HashInfo("md5", item["md5"]) for item in _listing(repo, dir_md5))]


def _pull(repo, ids: list) -> bool:
    """Download objects from the default DVC remote into the local cache; False if any failed."""
    quiet = logging.getLogger("dvc")
    level, quiet.level = quiet.level, logging.CRITICAL  # DVC warns about each object the remote lacks
    try:
        return not repo.cloud.pull(ids).failed
    except Exception:  # noqa: BLE001  (no remote, unreachable, missing objects: the stage rebuilds)
        return False
    finally:
        quiet.level = level


def cache_damage(repo, dir_md5: str) -> str | None:
    """Why the cached objects of a folder cannot be trusted (missing, corrupted), or None.

    DVC's local cache skips hashing any read-only object; an object edited and made read-only
    again would pass, so this hashes every one (cheap after the first time: DVC's state database
    remembers the hash by inode, mtime and size). DVC deletes an object whose hash is wrong.
    """
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.errors import ObjectFormatError

    try:
        HashFileDB.check(repo.cache.local, dir_md5)
        for obj in object_ids(repo, dir_md5)[1:]:
            HashFileDB.check(repo.cache.local, obj.value)
    except FileNotFoundError:
        return MISSING
    except ObjectFormatError:
        return "its cached copy is corrupted (DVC's hash check failed; the bad object was removed)"
    return None


def usable(repo, dir_md5: str) -> str | None:
    """Why a version cannot be checked out, or None once its objects are in the local cache,
    intact. Its manifest is fetched (if missing) and checked before any object it names is
    fetched, hashed or checked out."""
    from dvc_data.hashfile.hash_info import HashInfo

    if not repo.cache.local.exists(dir_md5):
        _pull(repo, [HashInfo("md5", dir_md5)])  # DVC reports no failure for an object a remote lacks
        if not repo.cache.local.exists(dir_md5):
            return MISSING
    why = manifest_problem(repo, dir_md5) or cache_damage(repo, dir_md5)
    if why == MISSING and _pull(repo, object_ids(repo, dir_md5)):
        why = cache_damage(repo, dir_md5)
    return why


def restore(
    root: Path, dvc_file: Path, fingerprint: dict, canonical: Path | None = None
) -> tuple[dict | None, list[str]]:
    """Bring back a build of this stage made from exactly `fingerprint`: the version the .dvc file
    names (a git checkout, a fresh clone after `doit pull`, `doit forget`), else the newest run-cache
    entry (filed under `canonical`, the step's workspace folder, if the .dvc file is a trial's).
    Returns (the .dvc document now in place plus `changed`: files the checkout rewrote, or None; why
    each candidate was refused)."""
    from dvc.repo import Repo

    refused = []
    with one_at_a_time(root), Repo(str(root)) as repo:
        current = artifacts.read_yaml(dvc_file)
        folder = dvc_file.with_name(dvc_file.name.removesuffix(".dvc"))
        output = (canonical or folder).relative_to(root).as_posix()
        candidates = entries(repo, fingerprint, output)
        in_place = (current or {}).get("outs") and current["outs"][0].get("path") == Path(output).name
        if in_place and (current.get("meta") or {}).get("fingerprint") == fingerprint:
            candidates.insert(0, current)
        tried = set()
        for doc in candidates:
            md5 = doc["outs"][0]["md5"]
            if md5 in tried:
                continue
            tried.add(md5)
            why = usable(repo, md5)
            if why:
                refused.append(f"version {md5[:8]} {why}")
                continue
            if doc is not current:
                artifacts.write_yaml(dvc_file, doc)
            result = repo.checkout(targets=[str(dvc_file)], force=True)
            save(repo, root, dvc_file, canonical)
            return {**doc, "changed": sum(result["stats"].values())}, refused
    return None, refused
