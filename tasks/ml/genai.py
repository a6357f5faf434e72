"""onnxruntime-genai: load an exported model on a device and decode greedily (with an adapter or not)."""

from __future__ import annotations

import json
import time
from pathlib import Path


def _file_entries(node, where: str = ""):
    """(key path, value) of every genai_config entry that names a file to load: model files
    (`filename`) and shared libraries (`custom_ops_library`, any `*library*` key)."""
    if isinstance(node, dict):
        for key, value in node.items():
            inner = f"{where}.{key}" if where else key
            if isinstance(value, str) and ("filename" in key or "library" in key):
                yield inner, value
            else:
                yield from _file_entries(value, inner)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _file_entries(value, f"{where}[{i}]")


def check_config(model_dir: Path) -> None:
    """Refuse a genai_config.json that would load a file from outside its folder: onnxruntime
    loads a custom-ops library as native code, and a model folder can come from a cache or a
    remote (StageError naming the key)."""
    from tasks.errors import StageError
    from tasks.paths import leaves

    config = model_dir / "genai_config.json"
    for key, value in _file_entries(json.loads(config.read_text())):
        if leaves(model_dir, value):
            raise StageError(f"{config}: {key} points at {value!r}, outside the model folder: refused")


CONTROL_FLOW = ("If", "Loop", "Scan")


def control_flow(model_dir: Path) -> list[str]:
    """The control-flow ops in the model's graph, which a CUDA graph cannot capture: onnxruntime
    refuses the session ("the model has control flow nodes"). Phi-3.5's LongRoPE picks its rotary
    cache with an If node; Llama-family graphs have none."""
    import onnx

    graph = onnx.load(model_dir / "model.onnx", load_external_data=False).graph
    return sorted({node.op_type for node in graph.node if node.op_type in CONTROL_FLOW})


def set_cuda_graph(model_dir: Path, on: bool) -> None:
    """Turn CUDA graphs on or off in the folder's genai_config.json (the file is replaced, never
    edited: it may be a hard link into DVC's cache)."""
    path = model_dir / "genai_config.json"
    config = json.loads(path.read_text())
    for provider in config["model"]["decoder"]["session_options"]["provider_options"]:
        if "cuda" in provider:
            provider["cuda"]["enable_cuda_graph"] = "1" if on else "0"
    path.unlink()
    path.write_text(json.dumps(config, indent=4) + "\n")


def load_model(model_dir: Path, device: str):
    """An og.Model on `device`; a CUDA-built model also runs on the CPU provider."""
    import onnxruntime_genai as og

    check_config(model_dir)
    config = og.Config(str(model_dir))
    if device == "cpu":
        config.clear_providers()
    elif device == "cuda":
        config.clear_providers()
        config.append_provider("cuda")
    return og.Model(config)


def prompt_tokenizer(model_dir: Path):
    """The tokenizer prompts are encoded with: the HF tokenizer the model folder ships, the class
    finetune and evaluate use (tasks/ml/chat_template.py), so a served prompt's ids are the
    trained ones; onnxruntime-genai's own tokenizer decodes the answer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def stream(model, prompt_ids, max_new_tokens: int, adapters=None, adapter: str | None = None):
    """Yield the greedy answer's token ids one at a time, `adapter` active (None: the base model)."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt_ids) + max_new_tokens)
    generator = og.Generator(model, params)
    if adapter:
        generator.set_active_adapter(adapters, adapter)  # before append_tokens, or the prompt runs without it
    generator.append_tokens(prompt_ids)
    while not generator.is_done():
        generator.generate_next_token()
        yield int(generator.get_next_tokens()[0])


def generate(model, tokenizer, prompt_ids, max_new_tokens: int, adapters=None, adapter: str | None = None):
    """Greedy decoding; returns (new token ids, seconds to first token, seconds in total)."""
    start = time.perf_counter()
    tokens, first = [], None
    for token in stream(model, prompt_ids, max_new_tokens, adapters, adapter):
        tokens.append(token)
        first = first or time.perf_counter() - start
    return tokens, first, time.perf_counter() - start


def pick_device(chosen: str, model_dir: Path, key: str) -> str:
    """auto: the provider the model was exported for, if this machine has it; else params' choice."""
    from tasks.ml import device

    cfg = json.loads((model_dir / "genai_config.json").read_text())
    built_for_cuda = "cuda" in json.dumps(cfg["model"]["decoder"]["session_options"]["provider_options"])
    return device.select(device.onnx_choice(chosen, "cuda" if built_for_cuda else "cpu"), key)
