#!/usr/bin/env bash
# A sweep on a CUDA machine, one step at a time and with -j 2, side by side (offline, from wheels):
#
#   benchmarks/sweep_gpu.sh WHEELS OUT
#
# WHEELS: the pinned packages the machine's Python lacks (its CUDA torch is used as found). Two
# fresh copies of this checkout each run the same 2 x 2 finetune grid on the tiny model (quantize,
# finetune and evaluate on CUDA, the ONNX model for the CPU): `doit exp run` and `doit exp run -j 2`.
# OUT gets both outputs, both records, the stage logs' first lines (which GPU each step saw) and
# summary.txt: wall times, and which steps of different trials overlapped under -j 2.
set -uo pipefail
wheels=$(realpath "$1"); out=$(realpath -m "$2")
cd "$(dirname "$0")/.."
mkdir -p "$out"
site=/tmp/lab-site
[ -d "$site" ] || python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl || exit 1
export PYTHONPATH=$site PATH=$site/bin:$PATH DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1 NO_COLOR=1 COLUMNS=160
nvidia-smi -L | tee "$out/gpu.txt"
grid=(-S finetune.lora_r=4,8 -S finetune.max_steps=20,40)
for jobs in ${JOBS:-1 2}; do  # JOBS="2": one of them (a machine that limits a command's time)
    copy=/tmp/sweep-j$jobs
    rm -rf "$copy" && mkdir -p "$copy"
    git ls-files -z -co --exclude-standard | xargs -0 cp --parents -t "$copy"
    (cd "$copy" && git init -q && cp params/tiny.yaml params.yaml && git add -A && git -c user.name=lab -c user.email=lab@localhost commit -qm checkout
     start=$(date +%s.%N)
     python3 -m doit exp run "${grid[@]}" -j $jobs > "$out/sweep-j$jobs.log" 2>&1
     echo "j$jobs: rc $? wall $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s" >> "$out/summary.txt"
     cp models/experiments/*.json "$out/record-j$jobs.json"
     grep -h "started (pid" logs/experiments/*/*/*.log > "$out/devices-j$jobs.txt")
done
python3 - "$out" <<'EOF' | tee -a "$out/summary.txt"
import json, sys
from pathlib import Path
doc = json.loads((Path(sys.argv[1]) / "record-j2.json").read_text())
units = {}
for trial, t in doc["trials"].items():
    for step, s in t["steps"].items():
        if "built" in s:
            units[s["unit"]] = (s["built"][0], s["built"][1], trial)
spans = sorted(units.items(), key=lambda kv: kv[1][0])
pairs = [(a, b) for i, (a, (s1, e1, _)) in enumerate(spans) for b, (s2, e2, _) in spans[i + 1:] if s2 < e1]
print(f"j2: {len(units)} steps built, {len(pairs)} pairs of them overlapped")
for a, b in pairs:
    print("  overlapped:", a, "|", b)
EOF
