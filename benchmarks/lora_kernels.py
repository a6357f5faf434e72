"""Which graph makes a LoRA branch cheapest in a CUDA decode step: onnxruntime alone, no model.

A decode step of the Phi-3.5 shape, 32 layers of int4 projections (MatMulNBits: 3072 -> 9216 like
qkv_proj, 9216 -> 3072, 3072 -> 3072 like o_proj), batch 1, one token, replayed as a CUDA graph. The
qkv- and o-like projections carry a rank-64 LoRA branch y += (x @ A) @ B: 64 branches, as the
travel adapter has. Each variant's step time against the step without branches gives a branch's cost.

Variants (the export builds `matmul` today; BENCHMARKS.md measured x @ A there as a cuBLASLt
split-K GEMM plus its reduction, 5.7 us of a branch's 9.6):
  none          no branches (the floor)
  zero          `matmul` with rank-0 inputs (what runs with no adapter active)
  matmul        MatMul(x, A[K, r]) -> MatMul(., B[r, N]) -> Add
  fused_t       A stored transposed [r, K]: com.microsoft FusedMatMul(x, A, transB=1), then as matmul
  fused_tt      both transposed: FusedMatMul(x, A[r, K], transB=1) -> FusedMatMul(., B[N, r], transB=1)
and each of none/matmul under ORT_DISABLE_CUBLASLT_MATMUL=1 (cuBLAS's classic GEMM, not cuBLASLt),
and ORT_FPA_INTB_GEMM=1 (onnxruntime's TensorRT-LLM int4 GEMV for MatMulNBits, if built in).
Each environment runs in its own process (onnxruntime reads them once). Measured on an H100
(BENCHMARKS.md): every form about 11.8 us a branch, three kernels of ~4 us, whatever cuBLAS path.

Usage: python benchmarks/lora_kernels.py [--device cuda] [--layers 32] [--rank 64] > out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HIDDEN, QKV = 3072, 9216
VARIANTS = ("none", "zero", "matmul", "fused_t", "fused_tt")
ENVIRONMENTS = {
    "default": {},
    "cublas_classic": {"ORT_DISABLE_CUBLASLT_MATMUL": "1"},
    "fpa_intb": {"ORT_FPA_INTB_GEMM": "1"},
}


def _int4(name: str, k: int, n: int, rng, block: int = 128) -> list:
    """The initializers of an int4 MatMulNBits weight [k -> n] (random nibbles, small scales)."""
    import numpy as np
    from onnx import numpy_helper

    blocks = k // block
    return [
        numpy_helper.from_array(rng.integers(0, 256, (n, blocks, block // 2), dtype=np.uint8), name + ".q"),
        numpy_helper.from_array((rng.random(n * blocks) * 0.002).astype(np.float16), name + ".s"),
        numpy_helper.from_array(rng.integers(0, 256, n * ((blocks + 1) // 2), dtype=np.uint8), name + ".z"),
    ]


def _branch(variant: str, x: str, y_base: str, y: str, name: str, k: int, n: int, rank: int, rng):
    """Nodes and initializers for y = y_base + (x @ A) @ B in one of the variants' forms."""
    import numpy as np
    from onnx import helper, numpy_helper

    r = 0 if variant == "zero" else rank
    transposed_a, transposed_b = variant in ("fused_t", "fused_tt"), variant == "fused_tt"
    a = (rng.standard_normal((k, r)) * 0.02).astype(np.float16)  # the same numbers in every variant
    b = (rng.standard_normal((r, n)) * 0.02).astype(np.float16)
    a, b = (a.T.copy() if transposed_a else a), (b.T.copy() if transposed_b else b)
    inits = [numpy_helper.from_array(a, name + ".A"), numpy_helper.from_array(b, name + ".B")]

    def product(left, right, out, transposed):
        if transposed:
            return helper.make_node("FusedMatMul", [left, right], [out], domain="com.microsoft", transB=1)
        return helper.make_node("MatMul", [left, right], [out])

    nodes = [
        product(x, name + ".A", name + ".xa", transposed_a),
        product(name + ".xa", name + ".B", name + ".xab", transposed_b),
        helper.make_node("Add", [y_base, name + ".xab"], [y]),
    ]
    return nodes, inits


def build(variant: str, layers: int, rank: int):
    """The decode-step graph: x [1, 1, 3072] fp16 through `layers` layers."""
    import numpy as np
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for layer in range(layers):
        for name, k, n, lora in (
            (f"l{layer}.qkv", HIDDEN, QKV, True),
            (f"l{layer}.down", QKV, HIDDEN, False),
            (f"l{layer}.o", HIDDEN, HIDDEN, True),
        ):
            inits += _int4(name, k, n, rng)
            y = f"{name}.y"
            base = y + ".base" if lora and variant != "none" else y
            nodes.append(
                helper.make_node(
                    "MatMulNBits",
                    [x, name + ".q", name + ".s", name + ".z"],
                    [base],
                    domain="com.microsoft",
                    K=k,
                    N=n,
                    bits=4,
                    block_size=128,
                )
            )
            if lora and variant != "none":
                more, weights = _branch(variant, x, base, y, name, k, n, rank, rng)
                nodes += more
                inits += weights
            x = y
    graph = helper.make_graph(
        nodes,
        "step",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 1, HIDDEN])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT16, [1, 1, HIDDEN])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)  # what onnxruntime 1.31 reads


def time_variant(variant: str, layers: int, rank: int, device: str, replays: int = 500) -> dict:
    """Microseconds per step (a CUDA graph replayed `replays` times, best of 5), and the output."""
    import numpy as np
    import onnxruntime as ort

    model = build(variant, layers, rank)
    x = (np.random.default_rng(1).standard_normal((1, 1, HIDDEN)) * 0.5).astype(np.float16)
    if device == "cpu":
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        start = time.perf_counter()
        out = session.run(None, {"x": x})[0]
        return {"us_per_step": (time.perf_counter() - start) * 1e6, "output": out}
    providers = [("CUDAExecutionProvider", {"enable_cuda_graph": "1"})]
    session = ort.InferenceSession(model.SerializeToString(), providers=providers)
    x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    out_dev = ort.OrtValue.ortvalue_from_shape_and_type([1, 1, HIDDEN], np.float16, "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input("x", x_dev)
    binding.bind_ortvalue_output(session.get_outputs()[0].name, out_dev)
    session.run_with_iobinding(binding)  # captures the graph
    best = float("inf")
    for _ in range(5):
        binding.synchronize_inputs()
        start = time.perf_counter()
        for _ in range(replays):
            session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        best = min(best, (time.perf_counter() - start) / replays)
    return {"us_per_step": best * 1e6, "output": out_dev.numpy()}


def run_environment(args) -> dict:
    """Every variant in this process's environment: step time, cost per branch, output agreement."""
    import numpy as np

    results, outputs = {}, {}
    for variant in VARIANTS:
        try:
            timed = time_variant(variant, args.layers, args.rank, args.device)
        except Exception as error:  # noqa: BLE001  (a variant this build cannot run is a result too)
            results[variant] = {"error": str(error).splitlines()[0][:300]}
            continue
        outputs[variant] = timed.pop("output").astype(np.float32)
        results[variant] = {"us_per_step": round(timed["us_per_step"], 1)}
    floor = results.get("none", {}).get("us_per_step")
    branches = 2 * args.layers
    for variant, row in results.items():
        if floor and "us_per_step" in row and variant != "none":
            row["us_per_branch"] = round((row["us_per_step"] - floor) / branches, 2)
    reference = outputs.get("matmul")
    for variant in ("fused_t", "fused_tt"):
        if reference is not None and variant in outputs:
            diff = np.abs(outputs[variant] - reference).max() / (np.abs(reference).max() + 1e-9)
            results[variant]["max_rel_diff_vs_matmul"] = float(diff)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--environment", help="run one environment's variants in this process (internal)")
    args = parser.parse_args()
    if args.environment:
        json.dump(run_environment(args), sys.stdout)
        return
    report = {"layers": args.layers, "rank": args.rank, "branches": 2 * args.layers, "device": args.device}
    for env_name, extra in ENVIRONMENTS.items():
        command = [
            sys.executable,
            __file__,
            "--environment",
            env_name,
            "--device",
            args.device,
            "--layers",
            str(args.layers),
            "--rank",
            str(args.rank),
        ]
        done = subprocess.run(command, env={**os.environ, **extra}, capture_output=True, text=True)
        report[env_name] = json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-600:]}
        sys.stderr.write(f"{env_name}: {json.dumps(report[env_name])}\n")
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
