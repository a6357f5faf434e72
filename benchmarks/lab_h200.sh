#!/usr/bin/env bash
# The README's set-up on a GPU machine that cannot download, then the lab at full size, in steps that
# each fit a command's time limit (the lent H200: 10 minutes a command, nothing downloadable):
#
#   benchmarks/lab_h200.sh setup  BUNDLE WHEELS OUT   # fresh clone of BUNDLE, make setup TORCH=system, make test-fast
#   benchmarks/lab_h200.sh build  OUT [PARAMS]        # starts the cold build (LAB_PROFILE=1) in the background
#   benchmarks/lab_h200.sh wait   OUT [PARAMS]        # waits for it; stage times, peak GPU memory, profiles
#   benchmarks/lab_h200.sh decode OUT [PARAMS] [ARGS] # benchmarks/decode.py --graphs --long --profile ARGS
#
# BUNDLE is `git bundle create lab.bundle HEAD` of the checkout; WHEELS a folder from
# `make wheelhouse DEVICE=cuda TORCH=system PYTHON_VERSION=3.12` (the machine's own CUDA torch is used).
# The clone lives in /tmp/lab; PARAMS defaults to params/phi35-h200.yaml.
set -uo pipefail
step=$1; shift
lab=/tmp/lab
export DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1 NO_COLOR=1 COLUMNS=160

case $step in
setup)
    bundle=$(realpath "$1"); wheels=$(realpath "$2"); out=$3; mkdir -p "$out"
    rm -rf "$lab" && git clone -q "$bundle" "$lab" && cd "$lab" || exit 1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
    start=$(date +%s)
    make setup TORCH=system PY=python3 WHEELHOUSE="$wheels" 2>&1 | tee "$out/setup.log" | grep -v '^\s' | tail -20
    rc=${PIPESTATUS[0]}
    echo "make setup TORCH=system WHEELHOUSE=...: $(( $(date +%s) - start )) s, rc $rc" | tee "$out/summary.txt"
    [ "$rc" = 0 ] || exit "$rc"
    .venv/bin/python -c 'import torch, transformers, onnxruntime as ort, onnxruntime_genai as og; print("torch", torch.__version__, torch.cuda.is_available(), "transformers", transformers.__version__, "onnxruntime", ort.__version__, ort.get_available_providers(), "genai", og.__version__)' | tee -a "$out/summary.txt"
    make test-fast 2>&1 | tail -3 | tee -a "$out/summary.txt"
    ;;
build)
    out=$1; params=${2:-params/phi35-h200.yaml}; mkdir -p "$out"; cd "$lab" || exit 1
    # Its own session: the command returns and the build goes on (the machine keeps it while held).
    setsid bash -c "nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -l 1 > /tmp/gpu_memory.csv & \
        start=\$(date +%s); LAB_PROFILE=1 LAB_PARAMS=$params .venv/bin/doit > /tmp/build.log 2>&1; \
        echo \"rc \$? after \$(( \$(date +%s) - start )) s\" > /tmp/build.done; kill %1" < /dev/null > /dev/null 2>&1 &
    sleep 5; tail -3 /tmp/build.log
    ;;
wait)
    out=$1; params=${2:-params/phi35-h200.yaml}; mkdir -p "$out"; cd "$lab" || exit 1
    for _ in $(seq 560); do [ -e /tmp/build.done ] && break; sleep 1; done
    cp /tmp/build.log "$out/"; tail -30 /tmp/build.log
    [ -e /tmp/build.done ] || { echo "still building"; exit 3; }
    echo "cold build: $(cat /tmp/build.done)" | tee -a "$out/summary.txt"
    .venv/bin/python -c "import csv,sys; print('peak GPU memory during the build:', max(int(r[1]) for r in csv.reader(open(sys.argv[1])) if len(r) > 1), 'MiB')" /tmp/gpu_memory.csv | tee -a "$out/summary.txt"
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
    echo "steps: setup build wait decode"; exit 2
    ;;
esac
