"""The names a build's figures go by in `--where`, `--sort`, `gates:` and `doit exp show`: every
number the evaluate step recorded, under its own name, plus short names for what users compare.
"""

from __future__ import annotations

from tasks.quality.names import VARIANTS

MB = 1e6
# Short names: the model a user ships (ONNX with its adapter), and the AWQ checkpoint's figures.
ALIASES = {
    "ppl": "perplexity_onnx_adapter",
    "ppl_base": "perplexity_base",
    "ppl_rtn": "perplexity_rtn",
    "ppl_awq": "perplexity_awq",
    "ppl_awq_adapter": "perplexity_awq_adapter",
    "decode_tok_s": "tokens_per_second_adapter",
    "ttft_ms": "ttft_ms_adapter",
}
# What `doit exp show` puts in its table, in this order (lower is better unless named in HIGHER).
KEY_COLUMNS = ("ppl", "ppl_awq", "answer_match", "size_mb", "decode_tok_s", "train_loss")
HIGHER_IS_BETTER = {"answer_match", "decode_tok_s"}
# The trade-off the Pareto front is drawn on: quality, size, speed.
PARETO = ("ppl", "size_mb", "decode_tok_s")
BOOKKEEPING = ("seconds", "bytes", "files")  # what every build record holds about the step itself


def _numbers(found: dict | None) -> dict:
    return {k: v for k, v in (found or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def row(steps: dict[str, dict]) -> dict:
    """One adapter's figures by name, from its steps' metrics ({"evaluate": {...}, "export": ...},
    steps keyed by stage name)."""
    evaluate = {k: v for k, v in _numbers(steps.get("evaluate")).items() if k not in BOOKKEEPING}
    values = dict(evaluate)
    values |= {short: evaluate[long] for short, long in ALIASES.items() if long in evaluate}
    match = [k for k in evaluate if k.startswith("answers_first_")]
    if match:
        values["answer_match"] = evaluate[match[0]]
    sizes = {"onnx_mb": "export", "adapter_mb": "adapter", "awq_mb": "quantize"}
    for short, stage in sizes.items():
        if "bytes" in _numbers(steps.get(stage)):
            values[short] = round(steps[stage]["bytes"] / MB, 2)
    if "onnx_mb" in values and "adapter_mb" in values:
        values["size_mb"] = round(values["onnx_mb"] + values["adapter_mb"], 2)
    if "last_loss" in _numbers(steps.get("finetune")):
        values["train_loss"] = steps["finetune"]["last_loss"]
    return values


# What every evaluate step records (tasks/stages/evaluate.py), known before anything is built.
MODELS = tuple(VARIANTS)
EVALUATE = (
    *(f"{kind}_{model}" for kind in ("loss", "perplexity") for model in MODELS),
    *(f"{kind}_{a}" for kind in ("tokens_per_second", "ttft_ms") for a in ("adapter", "no_adapter")),
    *(f"bytes_{m}" for m in ("base", "awq", "adapter", "onnx", "onnx_adapter")),
    "compression_awq",
    "compression_onnx",
    "examples",
)


def known_names(rows: list[dict]) -> list[str]:
    """Every name some row has, and the names any build has (for "unknown metric" errors before
    anything is built)."""
    names = {*ALIASES, *EVALUATE, "answer_match", "size_mb", "onnx_mb", "adapter_mb", "awq_mb", "train_loss"}
    for found in rows:
        names.update(found)
    return sorted(names)
