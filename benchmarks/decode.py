"""Decode speed of the int4 ONNX model (onnxruntime-genai), with its adapter and without, against
HF transformers + peft on the same AWQ weights (dequantized to fp16), side by side in one run.

Batch 1, a 128-token prompt, 256 new tokens (greedy, EOS ignored so every run decodes 256). Each
figure is the best of 3 runs after a warm-up: time to first token and decode tokens/s. Variants:
genai as exported, and with CUDA graphs (`enable_cuda_graph` in a copy of genai_config.json; the
weights are linked, not copied), whose greedy tokens must equal the run without graphs; HF with the
default `generate` and with `cache_implementation="static"` (generate then compiles the step).
The memory-bandwidth ceiling is the weight bytes read per token over `--bandwidth`.

--long checks LongRoPE's cache choice (tasks/ml/longrope.py) where CUDA graphs change the attention
mask's shape: prompts that cross and pass 4096 tokens decode the same tokens with graphs as without.
--profile records every CUDA kernel of 64 decode steps (CUPTI, through torch.profiler), adapter on
and off, graphs off: where a token's time goes, kernel by kernel.

Usage: python benchmarks/decode.py models/<name> [--device cuda] [--bandwidth 4.8e12] [--hf] [--graphs]
       [--long] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PROMPT, NEW, ROUNDS = 128, 256, 3


def _prompt_ids(vocab: int) -> list[int]:
    import numpy as np

    return np.random.default_rng(0).integers(10, vocab, PROMPT).tolist()


def _genai_version() -> str:
    for dist in ("onnxruntime-genai-cuda", "onnxruntime-genai"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "absent"


def with_cuda_graphs(model_dir: Path, scratch: Path, on: bool) -> Path:
    """A copy of the model folder (files hard-linked: a symlink leaves the folder, which load_model
    refuses) whose genai_config turns CUDA graphs on or off, whatever the export chose."""
    from tasks.ml.genai import set_cuda_graph

    copy = scratch / ("graphs" if on else "no-graphs")
    copy.mkdir(parents=True)
    for f in model_dir.iterdir():
        os.link(f, copy / f.name)
    set_cuda_graph(copy, on)
    return copy


def _genai_once(og, model, adapters, ids: list[int], adapter: bool) -> tuple[float, float, list[int]]:
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=PROMPT + NEW, min_length=PROMPT + NEW)
    gen = og.Generator(model, params)
    if adapter:
        gen.set_active_adapter(adapters, "travel")
    start = time.perf_counter()
    gen.append_tokens(ids)
    gen.generate_next_token()
    first = time.perf_counter()
    while not gen.is_done():
        gen.generate_next_token()
    seconds, tokens = time.perf_counter() - first, [int(t) for t in gen.get_sequence(0)[PROMPT:]]
    if len(tokens) < NEW:  # an early stop would turn into an absurd rate (seen: NaN adapter, 1 token)
        raise SystemExit(f"genai stopped after {len(tokens)} of {NEW} tokens (EOS or non-finite logits): not timed")
    return first - start, (NEW - 1) / seconds, tokens


def genai(model_dir: Path, adapter_file: Path, device: str) -> dict:
    """{"adapter"/"no_adapter": figures} for one model folder, one og.Model for both."""
    import onnxruntime_genai as og

    from tasks.ml.genai import load_model

    model = load_model(model_dir, device)
    adapters = og.Adapters(model)
    adapters.load(str(adapter_file), "travel")
    vocab = json.loads((model_dir / "genai_config.json").read_text())["model"]["vocab_size"]
    ids = _prompt_ids(min(vocab, 1000))
    found = {}
    for adapter in (False, True):
        _genai_once(og, model, adapters, ids, adapter)  # warm-up (graph capture, allocations)
        runs = [_genai_once(og, model, adapters, ids, adapter) for _ in range(ROUNDS)]
        best = min(runs, key=lambda r: -r[1])
        found["adapter" if adapter else "no_adapter"] = {
            "ttft_ms": round(1000 * min(r[0] for r in runs), 1),
            "tokens_per_s": round(best[1], 1),
            "first_tokens": best[2][:16],
        }
    weights = sum(p.stat().st_size for p in model_dir.glob("model.onnx*"))
    return {"runtime": _genai_version(), **found, "weight_bytes": weights}


def _hf_once(model, ids, static: bool) -> tuple[float, float]:
    import torch

    extra = {"cache_implementation": "static"} if static else {}
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False, **extra)
    torch.cuda.synchronize()
    first = time.perf_counter()
    with torch.no_grad():
        model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, **extra)
    torch.cuda.synchronize()
    total = time.perf_counter() - first
    return first - start, (NEW - 1) / (total - (first - start))


def long_prompts(model_dir: Path, graphs_dir: Path, adapter_file: Path, device: str) -> dict:
    """Greedy tokens past `original_max_position_embeddings`, with and without graphs, adapter on."""
    import numpy as np
    import onnxruntime_genai as og

    from tasks.ml.genai import load_model

    found = {}
    for length in (4090, 4200):  # crosses 4096 while decoding; past it from the prompt on
        ids = np.random.default_rng(length).integers(10, 1000, length).tolist()
        runs = {}
        for name, folder in (("no_graphs", model_dir), ("graphs", graphs_dir)):
            model = load_model(folder, device)
            adapters = og.Adapters(model)
            adapters.load(str(adapter_file), "travel")
            params = og.GeneratorParams(model)
            params.set_search_options(do_sample=False, max_length=length + 32, min_length=length + 32)
            gen = og.Generator(model, params)
            gen.set_active_adapter(adapters, "travel")
            gen.append_tokens(ids)
            while not gen.is_done():
                gen.generate_next_token()
            runs[name] = [int(t) for t in gen.get_sequence(0)[length:]]
            del gen, adapters, model
        found[str(length)] = {"same_tokens": runs["graphs"] == runs["no_graphs"], "tokens": runs["graphs"][:12]}
    return found


def kernel_profile(model_dir: Path, adapter_file: Path, device: str, steps: int = 64) -> dict:
    """Per decode step, adapter off and on: kernels launched and GPU time, the top kernels by time."""
    import onnxruntime_genai as og
    from torch.profiler import ProfilerActivity, profile

    from tasks.ml.genai import load_model

    model = load_model(model_dir, device)
    adapters = og.Adapters(model)
    adapters.load(str(adapter_file), "travel")
    ids = _prompt_ids(1000)
    found = {}
    for adapter in (False, True):
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=PROMPT + steps + 1, min_length=PROMPT + steps + 1)
        gen = og.Generator(model, params)
        if adapter:
            gen.set_active_adapter(adapters, "travel")
        gen.append_tokens(ids)
        gen.generate_next_token()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                gen.generate_next_token()
        rows = [e for e in prof.key_averages() if e.device_time_total > 0]
        total = sum(e.device_time_total for e in rows)
        top = sorted(rows, key=lambda e: -e.device_time_total)[:12]
        found["adapter" if adapter else "no_adapter"] = {
            "kernels_per_step": round(sum(e.count for e in rows) / steps, 1),
            "gpu_us_per_step": round(total / steps, 1),
            "top": [[e.key[:90], round(e.count / steps, 1), round(e.device_time_total / steps, 1)] for e in top],
        }
    return found


def hf(models: Path, adapter: str) -> dict:
    """transformers + peft, fp16, default and static-cache generate, adapter on and off."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tasks.ml.awq_weights import write_dequantized

    with tempfile.TemporaryDirectory() as tmp:
        write_dequantized(models / "awq", Path(tmp), "float16")
        base = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float16).cuda()
    model = PeftModel.from_pretrained(base, str(models / "ft" / adapter)).eval()
    ids = torch.tensor([_prompt_ids(1000)], device="cuda")
    found = {}
    for static in (False, True):
        for adapter in (False, True):
            key = f"{'static' if static else 'default'}_{'adapter' if adapter else 'no_adapter'}"
            if adapter:
                runs = [_hf_once(model, ids, static) for _ in range(ROUNDS + 1)][1:]
            else:
                with model.disable_adapter():
                    runs = [_hf_once(model, ids, static) for _ in range(ROUNDS + 1)][1:]
            found[key] = {
                "ttft_ms": round(1000 * min(r[0] for r in runs), 1),
                "tokens_per_s": round(max(r[1] for r in runs), 1),
            }
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "runtime": f"transformers {metadata.version('transformers')} + peft {metadata.version('peft')}",
        **found,
        "weight_bytes": weights,
    }


def main() -> None:
    from tasks.ml.genai import control_flow

    parser = argparse.ArgumentParser()
    parser.add_argument("models", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--bandwidth", type=float, default=4.8e12, help="bytes/s (H200 datasheet)")
    parser.add_argument("--hf", action="store_true", help="also time transformers + peft (CUDA)")
    parser.add_argument("--graphs", action="store_true", help="also time genai with CUDA graphs")
    parser.add_argument("--adapter", default="travel", help="which adapter of the build")
    parser.add_argument("--long", action="store_true", help="graphs against no graphs past 4096 tokens")
    parser.add_argument("--profile", action="store_true", help="kernels per decode step, adapter on and off")
    args = parser.parse_args()
    model_dir = args.models / "onnx-ao" / "model"
    adapter_file = args.models / "onnx-ao" / "adapters" / args.adapter / "adapter_weights.onnx_adapter"
    with tempfile.TemporaryDirectory(dir=args.models) as scratch:  # same file system: hard links
        no_graphs = with_cuda_graphs(model_dir, Path(scratch), on=False)
        results = {"genai": genai(no_graphs, adapter_file, args.device)}
        flow = control_flow(model_dir)
        if args.graphs and flow:
            sys.stderr.write(f"CUDA graphs not timed: the graph has {flow} nodes, which they cannot capture\n")
        elif args.graphs:
            graphs = with_cuda_graphs(model_dir, Path(scratch), on=True)
            results["genai_graphs"] = genai(graphs, adapter_file, args.device)
            if args.long:
                results["long_prompts"] = long_prompts(no_graphs, graphs, adapter_file, args.device)
        if args.profile:
            results["kernels"] = kernel_profile(no_graphs, adapter_file, args.device)
    if "genai_graphs" in results:
        for key in ("adapter", "no_adapter"):
            same = results["genai_graphs"][key]["first_tokens"] == results["genai"][key]["first_tokens"]
            results["genai_graphs"][key]["same_tokens_as_without_graphs"] = same
    if args.hf:
        results["hf"] = hf(args.models, args.adapter)
    for r in (results[k] for k in ("genai", "genai_graphs", "hf") if k in results):
        r["ceiling_tokens_per_s"] = round(args.bandwidth / r["weight_bytes"], 1)
    sys.stdout.write(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
