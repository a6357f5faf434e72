"""Earlier builds of a stage, found by fingerprint and brought back from DVC's cache without recompute.

Every finished build leaves an entry in DVC's run-cache folder (`.dvc/cache/runs/<key[:2]>/<key>/`),
in DVC's own run-cache format, so DVC's run-cache transfer carries the entries (`doit push` sends
the objects they name too; a restore fetches missing ones from the remote). The key is the sha256 of
the stage's fingerprint (the same record that decides staleness), so an entry is only ever used for
exactly the inputs it was built from.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from tasks import artifacts


def _key(fingerprint: dict) -> str:
    from dvc.utils import dict_sha256

    return dict_sha256(fingerprint)


def _runs_dir(repo) -> Path:
    return Path(repo.cache.legacy.path) / "runs"


def save(repo, root: Path, dvc_file: Path) -> None:
    """Record the build a .dvc file describes under its fingerprint's key."""
    from dvc.utils import dict_sha256

    doc = artifacts.read_yaml(dvc_file)
    meta = doc["meta"]
    out = dict(doc["outs"][0])
    out["path"] = (dvc_file.parent / out["path"]).relative_to(root).as_posix()
    entry = {"cmd": f"doit {meta['stage']}", "params": {"lab": meta}, "outs": [out]}
    folder = _runs_dir(repo) / (key := _key(meta["fingerprint"]))[:2] / key
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / dict_sha256(entry)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(entry, sort_keys=False), encoding="utf-8")
        tmp.replace(path)


def entry_files(repo) -> list[Path]:
    runs = _runs_dir(repo)
    return [p for p in runs.glob("*/*/*") if p.is_file()] if runs.is_dir() else []


def entries(repo, fingerprint: dict) -> list[dict]:
    """.dvc documents of earlier builds with exactly this fingerprint, newest first."""
    folder = _runs_dir(repo) / (key := _key(fingerprint))[:2] / key
    found = sorted(folder.glob("*"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    docs = []
    for path in found:
        entry = artifacts.read_yaml(path)
        try:
            meta, out = entry["params"]["lab"], dict(entry["outs"][0])
        except (TypeError, KeyError, IndexError):
            continue  # not ours, or damaged: never used
        if meta.get("fingerprint") == fingerprint:
            out["path"] = Path(out["path"]).name
            docs.append({"outs": [out], "meta": meta})
    return docs


MISSING = "not in the DVC cache (nor on the remote)"


def object_ids(repo, dir_md5: str) -> list:
    """The folder's manifest object and every file object it lists (DVC's transfer of a `.dir`
    hash alone moves only the manifest)."""
    from dvc_data.hashfile.hash_info import HashInfo

    listing = json.loads(Path(repo.cache.local.oid_to_path(dir_md5)).read_text())
    return [HashInfo("md5", dir_md5), *(HashInfo("md5", item["md5"]) for item in listing)]


def fetch(repo, dir_md5: str) -> bool:
    """Try to download a folder's objects from the default DVC remote into the local cache."""
    from dvc_data.hashfile.hash_info import HashInfo

    quiet = logging.getLogger("dvc")
    level, quiet.level = quiet.level, logging.CRITICAL  # DVC warns about each object the remote lacks
    try:
        if repo.cloud.pull([HashInfo("md5", dir_md5)]).failed:
            return False
        return not repo.cloud.pull(object_ids(repo, dir_md5)).failed
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


def restore(root: Path, dvc_file: Path, fingerprint: dict) -> tuple[dict | None, list[str]]:
    """Bring back a build of this stage made from exactly `fingerprint`: the version the .dvc file
    names (a git checkout, a fresh clone after `doit pull`, `doit forget`), else the newest run-cache
    entry. Returns (the .dvc document now in place plus `changed`: files the checkout rewrote, or
    None; why each candidate was refused)."""
    from dvc.repo import Repo

    refused = []
    with Repo(str(root)) as repo:
        current = artifacts.read_yaml(dvc_file)
        candidates = entries(repo, fingerprint)
        if current and (current.get("meta") or {}).get("fingerprint") == fingerprint:
            candidates.insert(0, current)
        tried = set()
        for doc in candidates:
            md5 = doc["outs"][0]["md5"]
            if md5 in tried:
                continue
            tried.add(md5)
            why = cache_damage(repo, md5)
            if why == MISSING and fetch(repo, md5):
                why = cache_damage(repo, md5)
            if why:
                refused.append(f"version {md5[:8]} {why}")
                continue
            if doc is not current:
                artifacts.write_yaml(dvc_file, doc)
            result = repo.checkout(targets=[str(dvc_file)], force=True)
            save(repo, root, dvc_file)
            return {**doc, "changed": sum(result["stats"].values())}, refused
    return None, refused
