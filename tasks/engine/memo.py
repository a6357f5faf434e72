"""What a no-op run would otherwise recompute on every `doit`: each source file's hash and imports,
the installed libraries' versions. Each value is kept with what it was computed from (a file's size
and mtime, the site-packages folders' mtimes) and recomputed when that changes; one small JSON
file beside doit's database, rewritten only after a change.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

from tasks.paths import DOIT_DB

MEMO_FILE = DOIT_DB + ".memo.json"


class Memo:
    def __init__(self, root: Path):
        self.path = root / MEMO_FILE
        try:
            self.data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def get(self, kind: str, key: str, stamp, compute):
        """The value filed under kind/key if it was computed from `stamp`, else compute() (filed)."""
        entry = self.data.setdefault(kind, {}).get(key)
        if entry is not None and entry["stamp"] == stamp:
            return entry["value"]
        value = compute()
        self.data[kind][key] = {"stamp": stamp, "value": value}
        self._save()
        return value

    def _save(self) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.data))
            tmp.replace(self.path)
        except OSError:  # a read-only checkout still builds, only slower
            tmp.unlink(missing_ok=True)


@functools.cache
def memo_for(root: Path) -> Memo:
    """The project's memo, one per process."""
    return Memo(root)


def file_stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def site_stamp() -> list:
    """The search path and the mtimes of its folders: an install or uninstall (a dist-info folder
    added or removed) changes them, in site-packages or in a folder on PYTHONPATH. The cwd (`''`)
    and the standard library's folders are left out: they change without installing anything, or
    never."""
    stdlib = os.path.dirname(os.__file__)
    folders = [p for p in sys.path if p and os.path.isdir(p) and (p.endswith("-packages") or not p.startswith(stdlib))]
    return [[p, os.stat(p).st_mtime_ns] for p in folders if os.path.realpath(p) != os.getcwd()]
