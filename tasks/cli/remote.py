"""`doit push` / `doit pull`: the artifacts, their versions and the run-cache, to and from a DVC remote.

The remote is DVC's (`.dvc/config`; the project's default, `local`, is a folder beside the checkout):
`dvc remote add -d store s3://bucket/lab` or `azure://container/lab` switch it. Credentials stay in
the environment or `.dvc/config.local`, never in params.yaml.
"""

from __future__ import annotations

from doit.cmd_base import Command

from tasks import ui
from tasks.cli.guard import locked
from tasks.engine import artifacts, store
from tasks.pipeline import plan

REMOTE_OPTION = {
    "name": "remote",
    "short": "r",
    "long": "remote",
    "type": str,
    "default": "",
    "help": "DVC remote name",
}


def run_cache_objects(repo) -> set[str]:
    """Content hashes named by the run-cache entries (every build this cache has recorded)."""
    hashes = set()
    for entry in store.entry_files(repo):
        for out in (artifacts.read_yaml(entry) or {}).get("outs") or []:
            hashes.add(out.get("md5"))
    return {h for h in hashes if store.is_md5(h)}  # an entry is data: its hash must look like one


NO_REMOTE = "no DVC remote: `dvc remote add -d store <folder | s3://... | azure://...>`"


def _fail(message: str, code: int = 1) -> int:
    ui.console.print(f"[bold red]error:[/] {message}")
    return code


def _guarded(verb: str, work) -> int:
    """Run `work()` (it returns what to report) under the run lock; DVC's and the lock's errors
    become one line and an exit code (3: a build holds the checkout)."""
    from dvc.config import NoRemoteError, RemoteConfigError
    from dvc.exceptions import DvcException

    refused = locked()  # pushing reads the cache a build writes; pulling rewrites outputs
    if refused:
        return refused
    try:
        message = work()
    except NoRemoteError:
        return _fail(NO_REMOTE)
    except (RemoteConfigError, DvcException) as exc:
        return _fail(f"{verb} failed: {exc}")
    ui.console.print(message)
    return 0


class Push(Command):
    doc_purpose = "upload the artifacts, every recorded build and the run-cache to the DVC remote"
    doc_usage = "[-r REMOTE] [--all-commits]"
    cmd_options = (
        REMOTE_OPTION,
        {
            "name": "all_commits",
            "long": "all-commits",
            "type": bool,
            "default": False,
            "help": "also every version referenced by any git commit",
        },
    )

    def execute(self, opt_values, pos_args):
        from dvc.repo import Repo

        remote = opt_values["remote"] or None

        def push() -> str:
            with Repo(str(plan()[1].root)) as repo:
                sent = repo.push(remote=remote, run_cache=True, all_commits=opt_values["all_commits"])
                # Builds known only to the run-cache (not in a commit) go too, so the remote can restore them.
                local = [h for h in run_cache_objects(repo) if repo.cache.local.exists(h)]
                local = [h for h in local if not store.manifest_problem(repo, h)]  # only names DVC may follow
                objects = [obj for h in local for obj in store.object_ids(repo, h)]
                sent += len(repo.cloud.push(objects, remote=remote).transferred)
            return f"[green]pushed[/] {sent} files and run-cache entries"

        return _guarded("push", push)


class Pull(Command):
    doc_purpose = "download the workspace's artifacts and the run-cache from the DVC remote"
    doc_usage = "[-r REMOTE]"
    cmd_options = (REMOTE_OPTION,)

    def execute(self, opt_values, pos_args):
        from dvc.repo import Repo

        def pull() -> str:
            with Repo(str(plan()[1].root)) as repo:
                stats = repo.pull(remote=opt_values["remote"] or None, run_cache=True)
            return f"[green]pulled[/] {stats['stats'].get('fetched', 0)} files; `doit` now restores, not rebuilds"

        return _guarded("pull", pull)
