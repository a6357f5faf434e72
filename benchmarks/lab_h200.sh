#!/usr/bin/env bash
# The README's set-up on a GPU machine that cannot download, then the lab at full size, in steps that
# each fit a command's time limit (the lent H200: 10 minutes a command, nothing downloadable):
#
#   benchmarks/lab_h200.sh setup  BUNDLE WHEELS OUT   # fresh clone of BUNDLE, make setup TORCH=system, make test-fast
#   benchmarks/lab_h200.sh build  OUT [PARAMS]        # starts the cold build (LAB_PROFILE=1) in the background
#   benchmarks/lab_h200.sh wait   OUT [PARAMS]        # waits for it; stage times, peak GPU memory (each stage's too), profiles
#   benchmarks/lab_h200.sh decode OUT [PARAMS] [ARGS] # benchmarks/decode.py --graphs --long --profile ARGS
#   benchmarks/lab_h200.sh fpa    OUT [PARAMS]        # decode.py --graphs with onnxruntime's TensorRT-LLM int4 GEMV
#   benchmarks/lab_h200.sh train  OUT [PARAMS]        # benchmarks/train_step.py: a LoRA training step, GPU or host bound
#   benchmarks/lab_h200.sh kernels OUT                # benchmarks/lora_kernels.py: a LoRA branch's cost, by graph form
#   benchmarks/lab_h200.sh smollm2 OUT                # SmolLM2 on CUDA: build, decode fused and unfused LoRA
#
# BUNDLE is `git bundle create lab.bundle HEAD` of the checkout; WHEELS a folder from
# `make wheelhouse DEVICE=cuda TORCH=system PYTHON_VERSION=3.12` (the machine's own CUDA torch is used).
# The clone lives in $LAB (default /tmp/lab), at $REV if set (a commit of BUNDLE: a "before" beside the
# "after" on one machine); PARAMS defaults to params/phi35-h200.yaml.
set -uo pipefail
step=$1; shift
lab=${LAB:-/tmp/lab}
here=$(cd "$(dirname "$0")" && pwd)  # this script's tools, also for a clone at an older REV
export DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1 NO_COLOR=1 COLUMNS=160

case $step in
setup)
    bundle=$(realpath "$1"); wheels=$(realpath "$2"); out=$3; mkdir -p "$out"
    rm -rf "$lab" && git clone -q "$bundle" "$lab" && cd "$lab" || exit 1
    [ -z "${REV:-}" ] || git checkout -q "$REV" || exit 1
    git log --oneline -1 | tee "$out/commit.txt"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
    start=$(date +%s)
    make setup TORCH=system PY=python3 WHEELHOUSE="$wheels" 2>&1 | tee "$out/setup.log" | grep -v '^\s' | tail -20
    rc=${PIPESTATUS[0]}
    echo "make setup TORCH=system WHEELHOUSE=...: $(( $(date +%s) - start )) s, rc $rc" | tee "$out/summary.txt"
    [ "$rc" = 0 ] || exit "$rc"
    .venv/bin/python -c 'import torch, transformers, onnxruntime as ort, onnxruntime_genai as og; print("torch", torch.__version__, torch.cuda.is_available(), "transformers", transformers.__version__, "onnxruntime", ort.__version__, ort.get_available_providers(), "genai", og.__version__)' | tee -a "$out/summary.txt"
    make test-fast 2>&1 | tail -3 | tee -a "$out/summary.txt"
    # What a stage process pays before its work: bytecode (an image without .pyc) and torch's imports.
    env | grep '^PYTHON' | tee -a "$out/summary.txt"
    ls .venv/lib/python3.12/site-packages/system-torch/torch/__pycache__ | wc -l | sed 's/^/torch .pyc files: /' | tee -a "$out/summary.txt"
    .venv/bin/python -X importtime -c 'import transformers, torch.distributed.tensor' 2> "$out/importtime.txt"
    sort -t'|' -k2 -n "$out/importtime.txt" | tail -12
    ;;
train)
    out=$1; params=${2:-params/phi35-h200.yaml}; mkdir -p "$out"; cd "$lab" || exit 1
    name=$(.venv/bin/python -c "import yaml; print(yaml.safe_load(open('$params'))['name'])")
    .venv/bin/python benchmarks/train_step.py "models/$name/awq" --json "$out/train_step.json" > "$out/train_step.log" 2>&1
    rc=$?; grep -v 'Loading weights\|warn' "$out/train_step.log" | tail -40; exit $rc
    ;;
kernels)
    out=$1; mkdir -p "$out"; cd "$lab" || exit 1
    .venv/bin/python benchmarks/lora_kernels.py > "$out/lora_kernels.json" 2> "$out/lora_kernels.log"
    rc=$?; cat "$out/lora_kernels.log"; exit $rc
    ;;
fpa)
    out=$1; params=${2:-params/phi35-h200.yaml}; mkdir -p "$out"; cd "$lab" || exit 1
    name=$(.venv/bin/python -c "import yaml; print(yaml.safe_load(open('$params'))['name'])")
    ORT_FPA_INTB_GEMM=1 .venv/bin/python benchmarks/decode.py "models/$name" --graphs > "$out/decode-fpa.json" 2> "$out/decode-fpa.log"
    rc=$?; tail -3 "$out/decode-fpa.log"; grep -A3 '"no_adapter"\|"adapter"' "$out/decode-fpa.json" | grep tokens_per_s; exit $rc
    ;;
smollm2)
    out=$1; mkdir -p "$out"; cd "$lab" || exit 1
    sed 's/fuse_lora: true /fuse_lora: false /' params/smollm2-h200.yaml > params/smollm2-h200-unfused.yaml
    for variant in fused unfused; do
        params=params/smollm2-h200.yaml; [ $variant = unfused ] && params=params/smollm2-h200-unfused.yaml
        start=$(date +%s); LAB_PARAMS=$params .venv/bin/doit > "$out/smollm2-$variant-build.log" 2>&1
        echo "smollm2 $variant build: rc $? after $(( $(date +%s) - start )) s" | tee -a "$out/summary.txt"
        grep '^✔' "$out/smollm2-$variant-build.log" | tee -a "$out/summary.txt"
        .venv/bin/python benchmarks/decode.py models/smollm2-gpu --graphs > "$out/smollm2-$variant.json" 2> "$out/smollm2-$variant.log"
    done
    .venv/bin/python - "$out" <<'PY' | tee -a "$out/summary.txt"
import json, sys
runs = {v: json.load(open(f"{sys.argv[1]}/smollm2-{v}.json")) for v in ("fused", "unfused")}
for key in ("no_adapter", "adapter"):
    rates = {v: r["genai_graphs"][key]["tokens_per_s"] for v, r in runs.items()}
    same = runs["fused"]["genai_graphs"][key]["first_tokens"] == runs["unfused"]["genai_graphs"][key]["first_tokens"]
    print(f"smollm2 graphs {key}: tokens/s {rates}, fused tokens == unfused: {same}")
PY
    ;;
build)
    out=$1; params=${2:-params/phi35-h200.yaml}; mkdir -p "$out"; cd "$lab" || exit 1
    # Its own session: the command returns and the build goes on (the machine keeps it while held).
    rm -f /tmp/build.done
    setsid bash -c "nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -l 1 > /tmp/gpu_memory.csv & \
        start=\$(date +%s); LAB_PROFILE=1 LAB_PARAMS=$params .venv/bin/doit > /tmp/build.log 2>&1; \
        echo \"rc \$? after \$(( \$(date +%s) - start )) s\" > /tmp/build.done; kill %1" < /dev/null > /dev/null 2>&1 &
    sleep 5; tail -3 /tmp/build.log
    ;;
wait)
    out=$1; params=${2:-params/phi35-h200.yaml}; mkdir -p "$out"; cd "$lab" || exit 1
    for _ in $(seq 560); do [ -e /tmp/build.done ] && break; sleep 1; done
    cp /tmp/build.log /tmp/gpu_memory.csv "$out/"; tail -30 /tmp/build.log
    [ -e /tmp/build.done ] || { echo "still building"; exit 3; }
    echo "cold build: $(cat /tmp/build.done)" | tee -a "$out/summary.txt"
    .venv/bin/python "$here/gpu_memory.py" /tmp/gpu_memory.csv logs | tee -a "$out/summary.txt"
    name=$(.venv/bin/python -c "import yaml; print(yaml.safe_load(open('$params'))['name'])")
    tar czf "$out/logs.tgz" logs models/metrics/"$name" models/"$name"/onnx-ao/model/genai_config.json 2>/dev/null
    ;;
decode)
    out=$1; params=${2:-params/phi35-h200.yaml}; shift 2 || shift; mkdir -p "$out"; cd "$lab" || exit 1
    name=$(.venv/bin/python -c "import yaml; print(yaml.safe_load(open('$params'))['name'])")
    .venv/bin/python benchmarks/decode.py "models/$name" --graphs --long --profile "$@" > "$out/decode.json" 2> "$out/decode.log"
    rc=$?; tail -5 "$out/decode.log"; cat "$out/decode.json"; exit $rc
    ;;
*)
    echo "steps: setup build wait decode train fpa kernels smollm2"; exit 2
    ;;
esac
