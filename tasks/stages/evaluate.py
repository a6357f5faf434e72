"""evaluate: what each stage cost and bought for one adapter, measured on its held-out eval split.

Every model sees the same token ids (the base model's tokenizer, the params template): loss and
perplexity of the base model, the base rounded to nearest on AWQ's grid (what AWQ has to beat),
the AWQ model and the AWQ model + adapter in torch, and of the ONNX model + adapter in
onnxruntime-genai; the share of eval answers whose first N generated tokens are
the reference's; artifact sizes; onnxruntime-genai decode speed with and without the adapter.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from tasks.engine.stage import Stage
from tasks.quality.names import VARIANTS  # the models measured, in order

DTYPES = {"cuda": "bfloat16", "cpu": "float32"}  # the torch models' compute dtype, per device


def _devices(params) -> dict:
    """The torch models run on evaluate.device; the ONNX model follows export.device as smoke's does."""
    from tasks.ml.device import onnx_choice

    return {"torch": params.evaluate.device, "onnx": onnx_choice(params.evaluate.device, params.export.device)}


STAGE = Stage(
    name="evaluate",
    module=__name__,
    doc="Measure every model on the eval split: loss, perplexity, answers, sizes, decode speed",
    output="models/{name}/eval/{adapter}",
    upstream=("data", "base", "quantize", "finetune", "export", "adapter"),
    libraries=("onnxruntime", "onnxruntime-gpu", "accelerate", "tokenizers"),  # under genai and transformers
    params=("evaluate", "template"),
    devices=_devices,
    dtypes=DTYPES,
)


def eval_examples(params, paths, tokenizer) -> list[dict]:
    """Eval records as token ids, as finetune trained on them: the whole example, its prompt part
    (what the model is served) and its answer."""
    from tasks.ml.chat_template import example_ids
    from tasks.ml.jsonl import read_jsonl

    records = read_jsonl(paths.output("data") / "eval.jsonl")
    if params.evaluate.max_examples:
        records = records[: params.evaluate.max_examples]
    examples = []
    for rec in records:
        ids, n_prompt = example_ids(tokenizer, params.template, rec["prompt"], rec["response"])
        full = ids[: params.evaluate.max_seq_len]
        examples.append({"prompt": ids[:n_prompt], "ids": full, "answer": full[n_prompt:], "question": rec["prompt"]})
    return examples


def nll(logits, ids: list[int]) -> tuple[float, int]:
    """Summed negative log-likelihood of ids[1:] given logits [len(ids), vocab] (numpy), and the count."""
    import numpy as np

    logits = logits.astype(np.float64)[:-1]
    logits -= logits.max(axis=-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return float(-logp[np.arange(len(ids) - 1), ids[1:]].sum()), len(ids) - 1


def torch_losses(model, examples: list[dict], dev: str) -> list[float]:
    """Mean NLL per example (per token), one forward pass each."""
    import torch

    losses = []
    with torch.no_grad():
        for ex in examples:
            logits = model(torch.tensor([ex["ids"]], device=dev)).logits[0].float().cpu().numpy()
            total, count = nll(logits, ex["ids"])
            losses.append(total / count)
    return losses


def torch_variants(params, paths, examples: list[dict], dev: str, channel) -> dict[str, list[float]]:
    """Per-example losses of the base model, the base rounded to nearest on the AWQ checkpoint's grid,
    the AWQ model (exactly dequantized) and AWQ + adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tasks.ml import rtn
    from tasks.ml.awq_weights import load_dequantized, ships_code

    dtype = DTYPES[dev]
    remote = ships_code(paths.output("base"))
    load = lambda folder: AutoModelForCausalLM.from_pretrained(  # noqa: E731
        folder, dtype=getattr(torch, dtype), trust_remote_code=remote
    )
    base = load(paths.output("base")).to(dev).eval()
    losses = {"base": torch_losses(base, examples, dev)}
    grid = json.loads((paths.output("quantize") / "config.json").read_text())["quantization_config"]
    rtn.quantize_decoder_linears(base, grid["bits"], grid["group_size"])
    losses["rtn"] = torch_losses(base, examples, dev)
    del base
    channel.progress("models", 2, len(VARIANTS))
    awq = load_dequantized(paths.output("quantize"), dtype, dev).eval()
    tuned = PeftModel.from_pretrained(awq, str(paths.output("finetune"))).eval()
    losses["awq_adapter"] = torch_losses(tuned, examples, dev)
    with tuned.disable_adapter():
        losses["awq"] = torch_losses(tuned, examples, dev)
    channel.progress("models", 4, len(VARIANTS))
    return losses


def onnx_session(params, paths):
    """The exported model, this adapter loaded, on the device smoke would use."""
    import onnxruntime_genai as og

    from tasks.ml.genai import load_model, pick_device

    model_dir = paths.output("export")
    dev = pick_device(params.evaluate.device, model_dir, "evaluate.device")
    model = load_model(model_dir, dev)
    adapters = og.Adapters(model)
    adapters.load(str(paths.adapter_file(paths.adapter)), paths.adapter)
    return model, adapters, dev


def onnx_losses(model, adapters, name: str, examples: list[dict]) -> list[float]:
    """Per-example losses of the ONNX model with the adapter active, from its prompt-pass logits."""
    import onnxruntime_genai as og

    losses = []
    for ex in examples:
        search = og.GeneratorParams(model)
        search.set_search_options(max_length=len(ex["ids"]) + 1)
        generator = og.Generator(model, search)
        generator.set_active_adapter(adapters, name)
        generator.append_tokens(ex["ids"])
        total, count = nll(generator.get_output("logits")[0], ex["ids"])
        losses.append(total / count)
    return losses


def answer_matches(model, adapters, name: str, examples: list[dict], n: int) -> list[bool]:
    """Whether the first n greedy tokens (adapter active) are exactly the reference answer's."""
    from tasks.ml.genai import generate

    matches = []
    for ex in examples:
        reference = ex["answer"][:n]
        tokens, _, _ = generate(model, None, ex["prompt"], len(reference) or 1, adapters, name)
        matches.append(bool(reference) and tokens[: len(reference)] == reference)
    return matches


HELD_OUT_ANSWERS = 3  # held-out questions answered in full, with the adapter and without


def held_out_answers(model, adapters, name: str, examples: list[dict], tokenizer, tokens: int) -> list[dict]:
    """The first held-out questions answered greedily (ONNX model) with the adapter and without."""
    from tasks.ml.genai import generate

    text = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    answers = []
    for ex in examples[:HELD_OUT_ANSWERS]:
        tuned, _, _ = generate(model, None, ex["prompt"], tokens, adapters, name)
        plain, _, _ = generate(model, None, ex["prompt"], tokens)
        answers.append({"prompt": ex["question"], "answer": text(tuned), "answer_without_adapter": text(plain)})
    return answers


def decode_speed(model, adapters, name: str, prompt: list[int], tokens: int, rounds: int) -> dict:
    """Best-of-`rounds` decode speed and time to first token, with and without the adapter."""
    from tasks.ml.genai import generate

    speed = {}
    for label, adapter in (("adapter", name), ("no_adapter", None)):
        generate(model, None, prompt, tokens, adapters, adapter)  # warm-up: first-run allocations
        runs = [generate(model, None, prompt, tokens, adapters, adapter) for _ in range(rounds)]
        new, ttft, seconds = min(runs, key=lambda r: r[2])
        speed[f"tokens_per_second_{label}"] = round(len(new) / seconds, 1)
        speed[f"ttft_ms_{label}"] = round(1000 * ttft, 2)
    return speed


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def sizes(paths) -> dict:
    found = {
        name: _folder_bytes(paths.output(stage))
        for name, stage in (
            ("base", "base"),
            ("awq", "quantize"),
            ("adapter", "finetune"),
            ("onnx", "export"),
            ("onnx_adapter", "adapter"),
        )
    }
    return {
        **{f"bytes_{name}": size for name, size in found.items()},
        "compression_awq": round(found["base"] / found["awq"], 3),
        "compression_onnx": round(found["base"] / found["onnx"], 3),
    }


def write_plots(out: Path, paths, losses: dict[str, list[float]]) -> None:
    """CSV files `dvc plots` reads (copied to models/plots/<name>/ by the build): the training loss
    per step, and each model's loss per eval example."""
    plots = out / "plots"
    plots.mkdir()
    train_log = json.loads((paths.output("finetune") / "train_log.json").read_text())["loss"]
    with (plots / "train_loss.csv").open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["step", "loss"])
        rows.writerows([e["step"], e["loss"]] for e in train_log if e["loss"] is not None)
    with (plots / "eval_loss.csv").open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["example", *VARIANTS])
        rows.writerows([i, *(round(losses[v][i], 5) for v in VARIANTS)] for i in range(len(losses["base"])))


def run(params, paths, out: Path, channel) -> dict:
    from transformers import AutoTokenizer

    from tasks.errors import StageError
    from tasks.ml import device
    from tasks.ml.awq_weights import ships_code

    dev = device.select(params.evaluate.device, "evaluate.device")
    tokenizer = AutoTokenizer.from_pretrained(paths.output("base"), trust_remote_code=ships_code(paths.output("base")))
    examples = eval_examples(params, paths, tokenizer)
    if not examples:
        raise StageError(f"{paths.output('data') / 'eval.jsonl'} holds no eval records")
    losses = torch_variants(params, paths, examples, dev, channel)
    model, adapters, onnx_dev = onnx_session(params, paths)
    name = paths.adapter
    losses["onnx_adapter"] = onnx_losses(model, adapters, name, examples)
    channel.progress("models", 5, len(VARIANTS))
    matches = answer_matches(model, adapters, name, examples, params.evaluate.match_tokens)
    cfg = params.evaluate
    speed = decode_speed(model, adapters, name, examples[0]["prompt"], cfg.decode_tokens, cfg.decode_rounds)
    metrics = {"examples": len(examples), "device_torch": dev, "device_onnx": onnx_dev}
    for variant in VARIANTS:
        loss = sum(losses[variant]) / len(losses[variant])
        metrics[f"loss_{variant}"] = round(loss, 5)
        metrics[f"perplexity_{variant}"] = round(math.exp(loss), 4)
    metrics[f"answers_first_{cfg.match_tokens}_tokens_match"] = round(sum(matches) / len(matches), 4)
    metrics |= speed | sizes(paths)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    answers = held_out_answers(model, adapters, name, examples, tokenizer, cfg.decode_tokens)
    (out / "answers.json").write_text(json.dumps({"answers": answers}, indent=2, ensure_ascii=False) + "\n")
    write_plots(out, paths, losses)
    rows = [[v, f"{metrics[f'loss_{v}']:.4f}", f"{metrics[f'perplexity_{v}']:.2f}"] for v in VARIANTS]
    channel.table(f"eval split ({len(examples)} examples)", ["model", "loss", "perplexity"], rows)
    return metrics
