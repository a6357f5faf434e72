"""The child process that runs one stage: `python -m tasks.child <stage> <job.json>`.

File descriptor 1 becomes the event channel to the parent (JSON lines); everything else a library
prints, C code included, goes to the stage's log file, which the parent opened as our stderr.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import traceback
from pathlib import Path


class Channel:
    """Events for the parent: progress of long loops, text to show, the outcome."""

    def __init__(self, fd: int):
        self._out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")

    def send(self, event: str, **fields) -> None:
        self._out.write(json.dumps({"event": event, **fields}) + "\n")

    def progress(self, bar: str, done: int, total: int | None) -> None:
        self.send("progress", bar=bar, done=done, total=total)

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        self.send("table", title=title, columns=columns, rows=rows)


def _take_over_stdout() -> Channel:
    channel = Channel(os.dup(1))
    os.dup2(2, 1)  # library prints go to the log, not into the event stream
    sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", errors="replace")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    return channel


def main(stage_name: str, job_file: str) -> int:
    channel = _take_over_stdout()
    from tasks import artifacts
    from tasks.errors import StageError
    from tasks.params import Params
    from tasks.paths import Paths

    job = json.loads(Path(job_file).read_text())
    logging.getLogger("tasks").info("stage %s: started (pid %d)", stage_name, os.getpid())
    params = Params.model_validate(job["params"])
    paths = Paths(Path(job["root"]), params.name)
    module = importlib.import_module(job["module"])
    out = paths.output(stage_name)
    try:
        with artifacts.staging(out) as tmp:
            summary = module.run(params, paths, tmp, channel) or {}
        artifacts.dvc_track(paths.root, out, {"stage": stage_name, "fingerprint": job["fingerprint"]})
    except StageError as exc:
        channel.send("error", message=str(exc))
        return 2
    except Exception as exc:  # the traceback goes to the log; the parent shows the last line
        traceback.print_exc()
        channel.send("error", message=f"{type(exc).__name__}: {exc}")
        return 1
    logging.getLogger("tasks").info("stage %s: done", stage_name)
    channel.send("summary", **summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
