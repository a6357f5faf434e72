"""The build's package: stages/, ml/, engine/, azureml/, cli/ and the leaves beside pipeline.py.

One environment can serve several checkouts (a second clone, a git worktree per experiment), and
doit imports the plugin commands from wherever this package was installed. So the package follows
the checkout you stand in: when the cwd is inside another checkout of the project, its tasks/ is
where every submodule is imported from, and every command acts on that project.
"""

from pathlib import Path as _Path


def _checkout_here():
    here = _Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "dodo.py").is_file():
            return folder / "tasks" if (folder / "tasks" / "__init__.py").is_file() else None
    return None


_tasks = _checkout_here()
if _tasks is not None and _tasks.resolve() != _Path(__file__).resolve().parent:
    __path__[:] = [str(_tasks)]  # noqa: F821  (a package's own search path)
