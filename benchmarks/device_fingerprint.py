"""What `device: auto` puts in the fingerprints on the machine at hand, with its GPU visible and
hidden (`CUDA_VISIBLE_DEVICES=`), beside what the stages' own resolution (tasks/ml/device.select)
picks in a fresh process, and whether a step planned for the CPU sees no GPU in its stage process.
No build is needed: `python benchmarks/device_fingerprint.py` (on a GPU machine, to see both sides).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROBE = """
import json, sys
from pathlib import Path
from tasks.engine.fingerprint import fingerprint
from tasks.ml import device
from tasks.pipeline import BY_NAME, plan
found, paths = plan(Path(sys.argv[1]))
prints = {s: fingerprint(BY_NAME[s.split(":")[0]], s, found, paths).get("device") for s in found.stages}
print(json.dumps({"fingerprints": {s: d for s, d in prints.items() if d}, "select(auto)": device.select("auto", "x")}))
"""
# A stage process whose step was planned for the CPU, first thing (tasks/engine/child.py).
HOLD = """
from tasks.engine.child import _hold_to_planned_devices
_hold_to_planned_devices({"device": {"device": "cpu", "dtype": "float32"}}, {"device": "auto"})
import torch
print(torch.cuda.is_available())
"""


def _python(code: str, project: Path, hidden: bool) -> str:
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if hidden else {})}
    out = subprocess.run([sys.executable, "-c", code, str(project)], cwd=project, env=env, text=True,
                         capture_output=True, check=True)  # fmt: skip
    return out.stdout.splitlines()[-1]


def probe(project: Path, hidden: bool) -> dict:
    return json.loads(_python(PROBE, project, hidden))


def main() -> None:
    from tests.conftest import edit_params, make_project

    with tempfile.TemporaryDirectory() as tmp:
        for export in ("cpu", "cuda"):
            project = make_project(Path(tmp) / f"export-{export}")
            edit_params(project, "device: cpu ", f"device: {export} ")
            for hidden in (False, True):
                label = f"export.device {export}, GPU {'hidden' if hidden else 'visible'}"
                print(json.dumps({label: probe(project, hidden)}))
        held = _python(HOLD, project, hidden=False)
        print(f"a step planned for the CPU: torch sees CUDA in its stage process: {held}")


if __name__ == "__main__":
    main()
