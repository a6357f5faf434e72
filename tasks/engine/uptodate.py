"""Whether a stage is up to date, and why not.

A stage is stale when its fingerprint (params section, code, library versions, device, upstream content
hashes, outside inputs) differs from the one stored in the `meta:` of its `.dvc` file, when doit
holds no record of building it (`doit forget`), or when its output folder no longer matches that
record. `plan` is a callable returning the build's (Plan, Paths), computed once per process.
"""

from __future__ import annotations

from tasks.engine import artifacts, store
from tasks.engine.fingerprint import diff_keys, fingerprint
from tasks.paths import DOIT_DB


def save_values(root, task_name: str, values: dict) -> None:
    """Write a stage's doit record now: doit saves only when the whole run ends, so a killed run
    would otherwise forget every stage it finished."""
    from doit.dependency import JSONCodec, SqliteDB

    db = SqliteDB(str(root / DOIT_DB), JSONCodec())
    db.get(task_name, "_values_:")  # loads the task's whole row, which dump() rewrites
    db.set(task_name, "_values_:", values)
    db.dump()


class UpToDate:
    """doit uptodate check; after a False, `reason` says why (shown by `doit info`)."""

    def __init__(self, stage, step: str, plan):
        self.stage, self.step = stage, step
        self.plan = plan
        self.reason = "not checked yet"

    def __call__(self, task, values) -> bool:
        self.reason = self._why_stale(values)
        return self.reason is None

    def _why_stale(self, values: dict) -> str | None:
        plan, paths = self.plan()
        dvc_file = paths.dvc_file(self.step)
        doc = artifacts.read_yaml(dvc_file)
        if not doc:
            return f"not built here yet ({dvc_file.relative_to(paths.root)} is missing)"
        stored = (doc.get("meta") or {}).get("fingerprint") or {}
        changed = diff_keys(stored, fingerprint(self.stage, self.step, plan, paths))
        if changed:
            return "changed: " + ", ".join(changed[:6])
        if "files" not in values:
            return "doit holds no record of building it (new checkout or `doit forget`)"
        if values.get("md5") != store.content_hash(dvc_file):
            return "its .dvc file names another version than the one built here (git checkout?)"
        why, current = store.damage(paths.root, paths.output(self.step), dvc_file, values["files"])
        if why is None and current != values["files"]:
            save_values(paths.root, self.step, {**values, "files": current})  # content verified: keep new stats
        return why

    def __repr__(self) -> str:
        return f"<{self.step} is stale: {self.reason}>"
