"""What a stage's output depends on: its params sections, its code, library versions, its inputs.

The code part is derived, not declared: the source of the stage's module and of every module under
tasks/ it imports, transitively (imports inside functions included, found by a static scan). The
engine (tasks/build/), the command line (tasks/cli/) and the pipeline decide when and where a stage
runs, never what it computes, so they are left out; so are the packages' `__init__.py` files.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from tasks.build.memo import file_stamp, memo_for, site_stamp

NOT_FINGERPRINTED = ("tasks/build/", "tasks/cli/", "tasks/pipeline.py")


def _versions(dists: tuple[str, ...]) -> dict[str, str]:
    from importlib import metadata

    found = {}
    for dist in dists:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "absent"
    return found


def versions(root: Path, dists: tuple[str, ...]) -> dict[str, str]:
    """{distribution: installed version} (reading package metadata costs ~1 ms each: memoized)."""
    return memo_for(root).get("versions", ",".join(dists), site_stamp(), lambda: _versions(dists))


def _module_file(root: Path, dotted: str) -> Path | None:
    """tasks/a/b.py for `tasks.a.b` (None for a package or a name that is not a module)."""
    path = root / (dotted.replace(".", "/") + ".py")
    return path if path.is_file() else None


def _scan(root: Path, path: Path) -> tuple[str, tuple[Path, ...]]:
    """(sha256 of the source, the files under tasks/ it imports); parsing costs ~3 ms a file: memoized."""
    rel = path.relative_to(root).as_posix()
    digest, imported = memo_for(root).get("sources", rel, file_stamp(path), lambda: _parse(root, path))
    return digest, tuple(root / p for p in imported)


def _parse(root: Path, path: Path) -> list:
    source = path.read_bytes()
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from tasks.ml import awq_pack` imports a module; `from tasks.ml.rtn import f` a name
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    files = {_module_file(root, n) for n in names if n.split(".")[0] == "tasks"}
    return [hashlib.sha256(source).hexdigest()[:16], sorted(f.relative_to(root).as_posix() for f in files if f)]


def code_of(root: Path, module: str) -> dict[str, str]:
    """{path: source hash} of `module` and of every module under tasks/ it imports."""
    hashes, todo = {}, [_module_file(root, module)]
    while todo:
        path = todo.pop()
        rel = path.relative_to(root).as_posix()
        if rel in hashes or rel.startswith(NOT_FINGERPRINTED):
            continue
        hashes[rel], imported = _scan(root, path)
        todo += imported
    return dict(sorted(hashes.items()))


def outside_input(root: Path, path: Path):
    """An input from outside the build: a file by its content (hashed again only when its size or
    mtime moved), a folder by its files' sizes and mtimes (a checkpoint of gigabytes is not read)."""
    from tasks.build.artifacts import file_stats

    if path.is_file():
        return memo_for(root).get("outside", str(path), file_stamp(path), lambda: _sha256(path))
    return file_stats(path) if path.is_dir() else "missing"


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fingerprint(stage, step: str, plan, paths) -> dict:
    """Everything a step's output depends on, as a small JSON-able dict."""
    from tasks.build.store import content_hash

    return {
        "params": plan.sections(step),
        "code": code_of(paths.root, stage.module),
        "libraries": versions(paths.root, stage.libraries),
        "inputs": {u: content_hash(paths.dvc_file(u)) for u in plan.upstream(step)},
        **{key: outside_input(paths.root, Path(path)) for key, path in plan.external(step).items()},
    }


def diff_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two fingerprints."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += diff_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys
