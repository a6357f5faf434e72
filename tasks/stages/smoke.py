"""smoke: answer the configured prompts with onnxruntime-genai, one adapter active and none, greedily."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.engine.stage import Stage
from tasks.ml.device import onnx_choice

STAGE = Stage(
    name="smoke",
    module=__name__,
    doc="Answer the configured prompts with the ONNX model, an adapter on and off",
    output="models/{name}/smoke/{adapter}",
    upstream=("export", "adapter"),
    libraries=("onnxruntime", "onnxruntime-gpu", "tokenizers"),  # onnxruntime-genai loads onnxruntime
    params=("smoke", "template"),
    devices=lambda params: {"device": onnx_choice(params.smoke.device, params.export.device)},
)


def run(params, paths, out: Path, channel) -> dict:
    import onnxruntime_genai as og

    from tasks.ml.chat_template import prompt_ids
    from tasks.ml.genai import generate, load_model, pick_device, prompt_tokenizer

    model_dir = paths.output("export")
    dev = pick_device(params.smoke.device, model_dir, "smoke.device")
    model = load_model(model_dir, dev)
    tokenizer, encoder = og.Tokenizer(model), prompt_tokenizer(model_dir)
    adapters = og.Adapters(model)
    name = paths.adapter
    adapters.load(str(paths.adapter_file(name)), name)
    answers = []
    for i, prompt in enumerate(params.smoke.prompts):
        ids = prompt_ids(encoder, params.template, prompt)
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
