"""What a stage's output depends on: its params sections, its code, library versions, its inputs.

The code part is derived, not declared: the source of the stage's module and of every module under
tasks/ it imports, transitively (imports inside functions included, found by a static scan). The
engine (tasks/build/), the command line (tasks/cli/) and the pipeline decide when and where a stage
runs, never what it computes, so they are left out; so are the packages' `__init__.py` files.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from importlib import metadata
from pathlib import Path

NOT_FINGERPRINTED = ("tasks/build/", "tasks/cli/", "tasks/pipeline.py")


@functools.cache
def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def _module_file(root: Path, dotted: str) -> Path | None:
    """tasks/a/b.py for `tasks.a.b` (None for a package or a name that is not a module)."""
    path = root / (dotted.replace(".", "/") + ".py")
    return path if path.is_file() else None


@functools.cache
def _scan(root: Path, path: Path) -> tuple[str, tuple[Path, ...]]:
    """(sha256 of the source, the files under tasks/ it imports)."""
    source = path.read_bytes()
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from tasks.ml import awq_pack` imports a module; `from tasks.ml.rtn import f` a name
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    files = {_module_file(root, n) for n in names if n.split(".")[0] == "tasks"}
    return hashlib.sha256(source).hexdigest()[:16], tuple(sorted(f for f in files if f))


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


def fingerprint(stage, params, paths) -> dict:
    """Everything a stage's output depends on, as a small JSON-able dict."""
    from tasks.build.store import content_hash

    dump = params.model_dump(mode="json")
    return {
        "params": {key: dump[key] for key in stage.sections_of(params)},
        "code": code_of(paths.root, stage.module),
        "libraries": {d: _version(d) for d in stage.libraries},
        "inputs": {u: content_hash(paths.dvc_file(u)) for u in stage.upstream_of(params)},
        **(stage.external_inputs(params, paths) if stage.external_inputs else {}),
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
