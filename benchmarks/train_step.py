"""Where a LoRA training step's time goes: the GPU's kernels or the host that launches them.

finetune trains 100 steps of one max_seq_len block each (BENCHMARKS.md: ~0.17 s a step for the
Phi-3.5 shape on an H100, where its ~16 TFLOP of bf16 work should take well under 0.1 s). This
times steps of the same model (the AWQ checkpoint dequantized in memory, as finetune loads it),
the same peft LoRA and a fused AdamW, in variants that change one thing each:
- `trainer`: as the HF Trainer under Olive runs it: attention mask of ones, gradient clipping,
  finetune's finite-gradient check and the loss read back every step (two host syncs a step);
- `no-sync`: the same without reading anything back until the end;
- `no-mask`: `trainer` without the attention mask (all ones: causal attention alone).
For each: wall ms a step (median of --steps after 3 warm-up steps), and from torch.profiler over 3
steps: GPU kernel time a step, kernels a step and the largest kernels. Kernel time near the wall
time: the GPU is the limit; far below it: the host is.

Usage: python benchmarks/train_step.py models/<name>/awq [--device cuda] [--steps 10]
       [--seq 1024] [--rank 64] [--alpha 16] [--targets qkv_proj o_proj] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VARIANTS = ("trainer", "no-sync", "no-mask")


def lora_model(awq_dir: Path, device: str, args):
    import torch
    from peft import LoraConfig, get_peft_model

    from tasks.ml.awq_weights import load_dequantized
    from tasks.stages.finetune import DTYPES

    model = load_dequantized(awq_dir, DTYPES[device], device)
    for p in model.parameters():
        p.requires_grad = False
    config = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.05, target_modules=args.targets)
    model = get_peft_model(model, config, autocast_adapter_dtype=True)
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=2e-4, fused=device == "cuda")
    return model, trained, optimizer


def step(model, trained, optimizer, ids, variant: str) -> None:
    import torch

    mask = None if variant == "no-mask" else torch.ones_like(ids)
    loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(trained, 1.0)
    if variant != "no-sync":
        finite = bool(torch.stack([torch.isfinite(p.grad).all() for p in trained]).all())  # finetune's guard
        loss.item(), norm.item(), finite  # noqa: B018  the Trainer's per-step log
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def synced(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(run, device: str, steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        synced(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def kernel_profile(run, device: str, steps: int = 3) -> dict:
    """GPU kernel time and count a step (CUPTI, as decode.py's profile), and the 8 largest kernels."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            run()
        synced(device)
    rows = [e for e in prof.key_averages() if e.device_time_total > 0]
    top = sorted(rows, key=lambda e: -e.device_time_total)[:8]
    return {
        "gpu_ms_per_step": round(sum(e.device_time_total for e in rows) / 1e3 / steps, 1),
        "kernels_per_step": round(sum(e.count for e in rows) / steps, 1),
        "top_kernels_ms_per_step": [[e.key[:90], round(e.device_time_total / 1e3 / steps, 2)] for e in top],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("awq_dir", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--alpha", type=int, default=16)
    parser.add_argument("--targets", nargs="+", default=["qkv_proj", "o_proj"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    start = time.perf_counter()
    model, trained, optimizer = lora_model(args.awq_dir, args.device, args)
    sys.stderr.write(f"model loaded in {time.perf_counter() - start:.1f} s\n")
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (1, args.seq), device=args.device)
    results = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "seq": args.seq}
    for variant in VARIANTS:
        run = lambda variant=variant: step(model, trained, optimizer, ids, variant)  # noqa: E731
        for _ in range(3):
            run()
        wall = time_steps(run, args.device, args.steps)
        profiled = kernel_profile(run, args.device) if args.device == "cuda" else {}
        results[variant] = {"wall_ms_per_step": round(wall, 1)} | profiled
        sys.stderr.write(f"{variant} {json.dumps(results[variant], indent=1)}\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
