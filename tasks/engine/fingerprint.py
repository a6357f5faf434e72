"""What a stage's output depends on: its params sections, its code, library versions, its inputs.

The code part is derived, not declared: the source of the stage's module and of every module under
tasks/ it imports, transitively (imports inside functions included, found by a static scan). The
engine (tasks/engine/), the command line (tasks/cli/) and the pipeline decide when and where a stage
runs, never what it computes, so they are left out; so are the packages' `__init__.py` files.
The libraries are derived by the same scan: every third-party module that code imports, mapped to
the distribution installed for it, plus what the stage names as used without an import.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import sys
from pathlib import Path

from tasks.engine.memo import file_stamp, memo_for, site_stamp

NOT_FINGERPRINTED = ("tasks/engine/", "tasks/cli/", "tasks/pipeline.py")


def _versions(dists: list[str]) -> dict[str, str]:
    from importlib import metadata

    found = {}
    for dist in dists:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "absent"
    return found


def _module_file(root: Path, dotted: str) -> Path | None:
    """tasks/a/b.py for `tasks.a.b` (None for a package or a name that is not a module)."""
    path = root / (dotted.replace(".", "/") + ".py")
    return path if path.is_file() else None


def _scan(root: Path, path: Path) -> tuple[str, tuple[Path, ...], list[str]]:
    """(sha256 of the source, the files under tasks/ it imports, the other modules it imports);
    parsing costs ~3 ms a file: memoized."""
    rel = path.relative_to(root).as_posix()
    digest, imported, modules = memo_for(root).get("imports", rel, file_stamp(path), lambda: _parse(root, path))
    return digest, tuple(root / p for p in imported), modules


def _parse(root: Path, path: Path) -> list:
    source = path.read_bytes()
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from tasks.ml import awq_pack` imports a module; `from tasks.ml.rtn import f` a name
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    ours = [n for n in names if n.split(".")[0] == "tasks"]
    files = {_module_file(root, n) for n in ours}
    others = sorted({n for n in names if n.split(".")[0] not in ("tasks", "__future__", *sys.stdlib_module_names)})
    return [hashlib.sha256(source).hexdigest()[:16], sorted(f.relative_to(root).as_posix() for f in files if f), others]


def scan(root: Path, module: str) -> tuple[dict[str, str], list[str]]:
    """({path: source hash} of `module` and of every module under tasks/ it imports; the
    third-party modules all of them import, inside functions too)."""
    hashes, modules, todo = {}, set(), [_module_file(root, module)]
    while todo:
        path = todo.pop()
        rel = path.relative_to(root).as_posix()
        if rel in hashes or rel.startswith(NOT_FINGERPRINTED):
            continue
        hashes[rel], imported, found = _scan(root, path)
        todo += imported
        modules.update(found)
    return dict(sorted(hashes.items())), sorted(modules)


def code_of(root: Path, module: str) -> dict[str, str]:
    """{path: source hash} of `module` and of every module under tasks/ it imports."""
    return scan(root, module)[0]


def _distributions(modules: list[str]) -> dict[str, str]:
    """{distribution: version} of those that provide these modules (`import onnxruntime_genai`:
    onnxruntime-genai or -cuda); a namespace several share (`azure`) is narrowed to the ones that
    hold the module. A module nothing provides counts as `module <name>: absent`."""
    from importlib import metadata

    by_top = metadata.packages_distributions()
    found, missing = set(), set()
    for module in modules:
        top = module.split(".")[0]
        dists = by_top.get(top, [])
        if len(dists) > 1:
            dists = _holders(dists, module.split(".")) or dists
        found.update(dists)
        missing.update([] if dists else [f"module {top}"])
    return _versions(sorted(found)) | dict.fromkeys(sorted(missing), "absent")


def _holders(dists: list[str], parts: list[str]) -> list[str]:
    """Of the distributions sharing a namespace, those holding the longest dotted prefix of the
    module that any of them holds (`azure.ai.ml.MLClient`: azure-ai-ml)."""
    for n in range(len(parts), 1, -1):
        prefix = "/".join(parts[:n])
        holders = [d for d in dists if any(f.startswith(prefix + "/") or f == prefix + ".py" for f in _files(d))]
        if holders:
            return holders
    return []


@functools.cache
def _files(dist: str) -> tuple[str, ...]:
    """A distribution's file list (its RECORD), read once however many modules ask."""
    from importlib import metadata

    return tuple(str(f) for f in metadata.files(dist) or [])


def libraries(root: Path, modules: list[str], named: tuple[str, ...]) -> dict[str, str]:
    """{distribution: installed version} of what a stage's code imports and of what it names as
    used without an import; reading package metadata costs ~1 ms each and finding who provides a
    module ~0.2 s in all: memoized until something is installed or removed."""
    key = ",".join([*modules, "|", *named])
    compute = lambda: dict(sorted((_distributions(modules) | _versions(sorted(named))).items()))  # noqa: E731
    stamp = [site_stamp(), file_stamp(Path(__file__))]  # installs, or this mapping's own code, change it
    return memo_for(root).get("libraries", key, stamp, compute)


def outside_input(root: Path, path: Path):
    """An input from outside the build: a file by its content (hashed again only when its size or
    mtime moved), a folder by its files' sizes and mtimes (a checkpoint of gigabytes is not read)."""
    from tasks.engine.artifacts import file_stats

    if path.is_file():
        return memo_for(root).get("outside", str(path), file_stamp(path), lambda: _sha256(path))
    return file_stats(path) if path.is_dir() else "missing"


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cuda_present(root: Path) -> bool:
    """Whether torch sees a CUDA device here. No /dev/nvidia* (every CPU machine): no, without
    importing torch; else torch is asked once, memoized while the devices, CUDA_VISIBLE_DEVICES
    and the installed packages stay the same."""
    nodes = sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*"))
    if not nodes:
        return False

    def ask_torch() -> bool:
        import torch

        return bool(torch.cuda.is_available())

    stamp = [nodes, os.environ.get("CUDA_VISIBLE_DEVICES"), site_stamp()]
    return memo_for(root).get("cuda", "present", stamp, ask_torch)


def devices(root: Path, stage, choices: dict[str, str]) -> dict:
    """What a step's device choices resolve to on this machine (auto: cuda when present, as the
    stage's own ml/device.select decides; an Azure ML compute stays named as the plan put it),
    and the compute dtype the first one implies."""
    if not choices:
        return {}
    here = lambda: "cuda" if cuda_present(root) else "cpu"  # noqa: E731
    resolved = {name: here() if choice == "auto" else choice for name, choice in choices.items()}
    first = next(iter(resolved.values()))
    dtype = {"dtype": stage.dtypes[first]} if stage.dtypes and first in stage.dtypes else {}
    return {"device": resolved | dtype}


def fingerprint(stage, step: str, plan, paths, inputs: dict | None = None) -> dict:
    """Everything a step's output depends on, as a small JSON-able dict. The upstream steps'
    content hashes are read from their .dvc files, unless `inputs` gives them (an experiment's
    dry run: what a cached build would bring back)."""
    from tasks.engine.store import content_hash

    code, modules = scan(paths.root, stage.module)
    return {
        "params": plan.sections(step),
        "code": code,
        "libraries": libraries(paths.root, modules, stage.libraries),
        "inputs": {u: inputs[u] if inputs else content_hash(paths.dvc_file(u)) for u in plan.upstream(step)},
        **devices(paths.root, stage, plan.devices(step)),
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
