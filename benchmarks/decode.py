"""Decode speed of the int4 ONNX model with its adapter (onnxruntime-genai) against HF transformers + peft.

Batch 1, a 128-token prompt, 256 new tokens (greedy, EOS ignored so every run decodes 256). Prints
time to first token, decode tokens/s, and the memory-bandwidth ceiling (bytes of weights read per
token / bandwidth). Usage: python benchmarks/decode.py models/<name> [--bandwidth 3.35e12] [--hf]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PROMPT, NEW = 128, 256


def _prompt_ids(vocab: int) -> list[int]:
    import numpy as np

    return np.random.default_rng(0).integers(10, vocab, PROMPT).tolist()


def genai(models: Path, device: str) -> dict:
    import onnxruntime_genai as og

    from tasks.ml.genai import load_model

    onnx_dir = models / "onnx-ao" / "model"
    model = load_model(onnx_dir, device)
    adapters = og.Adapters(model)
    adapters.load(str(onnx_dir / "adapter_weights.onnx_adapter"), "travel")
    vocab = json.loads((onnx_dir / "genai_config.json").read_text())["model"]["vocab_size"]
    ids = _prompt_ids(min(vocab, 1000))
    runs = []
    for _ in range(3):  # the first run warms up
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=PROMPT + NEW, min_length=PROMPT + NEW)
        gen = og.Generator(model, params)
        gen.set_active_adapter(adapters, "travel")
        start = time.perf_counter()
        gen.append_tokens(ids)
        gen.generate_next_token()
        first = time.perf_counter()
        while not gen.is_done():
            gen.generate_next_token()
        seconds, made = time.perf_counter() - first, len(gen.get_sequence(0)) - PROMPT
        if made < NEW:  # an early stop would turn into an absurd rate (seen: NaN adapter, 1 token)
            raise SystemExit(f"genai stopped after {made} of {NEW} tokens (EOS or non-finite logits): not timed")
        runs.append((first - start, (NEW - 1) / seconds))
    weights = sum(p.stat().st_size for p in onnx_dir.glob("model.onnx*"))
    return {"ttft_ms": round(1000 * runs[-1][0], 1), "tokens_per_s": round(runs[-1][1], 1), "weight_bytes": weights}


def hf(models: Path) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tasks.ml.awq_weights import write_dequantized

    with tempfile.TemporaryDirectory() as tmp:
        write_dequantized(models / "awq", Path(tmp), "float16")
        base = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float16).cuda()
    model = PeftModel.from_pretrained(base, str(models / "ft" / "adapter")).eval()
    ids = torch.tensor([_prompt_ids(1000)], device="cuda")
    runs = []
    for _ in range(3):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False)
        torch.cuda.synchronize()
        first = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
        torch.cuda.synchronize()
        total = time.perf_counter() - first
        runs.append((first - start, (NEW - 1) / (total - (first - start))))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"ttft_ms": round(1000 * runs[-1][0], 1), "tokens_per_s": round(runs[-1][1], 1), "weight_bytes": weights}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--bandwidth", type=float, default=3.35e12, help="bytes/s (H100 SXM datasheet)")
    parser.add_argument("--hf", action="store_true", help="also time transformers + peft (CUDA)")
    args = parser.parse_args()
    results = {"genai": genai(args.models, args.device)}
    if args.hf:
        results["hf"] = hf(args.models)
    for r in results.values():
        ceiling = args.bandwidth / r["weight_bytes"]
        r["ceiling_tokens_per_s"] = round(ceiling, 1)
        r["share_of_ceiling"] = round(r["tokens_per_s"] / ceiling, 3)
    if "hf" in results:
        results["genai_over_hf"] = round(results["genai"]["tokens_per_s"] / results["hf"]["tokens_per_s"], 2)
    sys.stdout.write(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
