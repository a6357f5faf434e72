"""smoke: answer the configured prompts with onnxruntime-genai, the adapter active, greedily."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tasks.stage import Stage, make_task

STAGE = Stage(
    name="smoke",
    module=__name__,
    doc="Answer the configured prompts with the ONNX model and its adapter",
    upstream=("export",),
    code=("smoke.py",),
    libraries=("onnxruntime-genai", "onnxruntime-genai-cuda", "onnxruntime", "onnxruntime-gpu"),
    params=("smoke", "template"),
)


def task_smoke():
    return make_task(STAGE)


def load_model(model_dir: Path, device: str):
    """An og.Model on `device`; a CUDA-built model also runs on the CPU provider."""
    import onnxruntime_genai as og

    config = og.Config(str(model_dir))
    if device == "cpu":
        config.clear_providers()
    elif device == "cuda":
        config.clear_providers()
        config.append_provider("cuda")
    return og.Model(config)


def generate(model, tokenizer, prompt_ids, max_new_tokens: int, adapters=None, adapter: str | None = None):
    """Greedy decoding; returns (new token ids, seconds to first token, seconds in total)."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt_ids) + max_new_tokens)
    generator = og.Generator(model, params)
    if adapter:
        generator.set_active_adapter(adapters, adapter)  # before append_tokens, or the prompt runs without it
    start = time.perf_counter()
    generator.append_tokens(prompt_ids)
    tokens, first = [], None
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
        first = first or time.perf_counter() - start
    return tokens, first, time.perf_counter() - start


def pick_device(chosen: str, model_dir: Path, key: str) -> str:
    from tasks import device

    if chosen == "auto":  # follow the provider the model was exported for, if this machine has it
        cfg = json.loads((model_dir / "genai_config.json").read_text())
        built_for_cuda = "cuda" in json.dumps(cfg["model"]["decoder"]["session_options"]["provider_options"])
        chosen = "auto" if built_for_cuda else "cpu"
    return device.select(chosen, key)


def run(params, paths, out: Path, channel) -> dict:
    import onnxruntime_genai as og

    from tasks.export import ADAPTER_FILE

    model_dir = paths.output("export")
    dev = pick_device(params.smoke.device, model_dir, "smoke.device")
    model = load_model(model_dir, dev)
    tokenizer = og.Tokenizer(model)
    adapters = og.Adapters(model)
    name = params.smoke.adapter_name
    adapters.load(str(model_dir / ADAPTER_FILE), name)
    answers = []
    for i, prompt in enumerate(params.smoke.prompts):
        ids = tokenizer.encode(params.render(prompt))
        tuned, ttft, seconds = generate(model, tokenizer, ids, params.smoke.max_new_tokens, adapters, name)
        plain, _, _ = generate(model, tokenizer, ids, params.smoke.max_new_tokens)
        answers.append(
            {
                "prompt": prompt,
                "answer": tokenizer.decode(tuned),
                "answer_without_adapter": tokenizer.decode(plain),
                "new_tokens": len(tuned),
                "tokens_per_second": round(len(tuned) / seconds, 1),
                "time_to_first_token_ms": round(1000 * ttft, 1),
            }
        )
        channel.progress("prompts", i + 1, len(params.smoke.prompts))
    (out / "answers.json").write_text(
        json.dumps({"device": dev, "answers": answers}, indent=2, ensure_ascii=False) + "\n"
    )
    # Quoted, with escapes: a tiny model's answer can be all newlines.
    rows = [[a["prompt"], json.dumps(a["answer"], ensure_ascii=False), f"{a['tokens_per_second']}"] for a in answers]
    channel.table(f"answers with adapter '{name}' ({dev})", ["prompt", "answer", "tokens/s"], rows)
    return {"device": dev, "tokens_per_second": answers[0]["tokens_per_second"]}
