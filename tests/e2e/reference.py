"""The torch reference: dequantized AWQ weights + the peft adapter, against the ONNX model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PROMPT = "<|user|>\nwhat is the best thing to see in chicago<|end|>\n<|assistant|>\n"


def _relative(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def torch_logits(project: Path, tmp: Path, name: str = "tiny", adapter: str = "travel"):
    """Logits of PROMPT with and without the adapter, from the dequantized AWQ model in fp32."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.ml.awq_weights import write_dequantized

    models = project / "models" / name
    write_dequantized(models / "awq", tmp, "float32")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp), str(models / "ft" / adapter)).eval()
    ids = AutoTokenizer.from_pretrained(tmp)(PROMPT)["input_ids"]
    with torch.no_grad():
        tuned = model(torch.tensor([ids])).logits[0].numpy()
        with model.disable_adapter():
            plain = model(torch.tensor([ids])).logits[0].numpy()
    return ids, tuned, plain, model.config


def onnx_logits(onnx_dir: Path, ids: list[int], config, adapter: Path | None):
    """Logits of the prompt from onnxruntime, optionally with an exported adapter file active."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
    head = config.hidden_size // config.num_attention_heads
    types = {i.name: i.type for i in session.get_inputs()}  # a CUDA export takes fp16 key/value caches
    for layer in range(config.num_hidden_layers):
        for kind in ("key", "value"):
            name = f"past_key_values.{layer}.{kind}"
            dtype = np.float16 if types[name] == "tensor(float16)" else np.float32
            feeds[name] = np.zeros((1, config.num_key_value_heads, 0, head), dtype)
    options = ort.RunOptions()
    if adapter:
        lora = ort.LoraAdapter()
        lora.Load(str(adapter))
        options.add_active_adapter(lora)
    return session.run(["logits"], feeds, options)[0][0].astype(np.float32)


def all_logits(project: Path, name: str = "tiny", adapter: str = "travel"):
    """(torch with adapter, torch without, ONNX with adapter, ONNX without) logits of PROMPT."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ids, tuned, plain, config = torch_logits(project, Path(tmp), name, adapter)
    onnx_dir = project / "models" / name / "onnx-ao" / "model"
    adapter_file = project / "models" / name / "onnx-ao" / "adapters" / adapter / "adapter_weights.onnx_adapter"
    return tuned, plain, onnx_logits(onnx_dir, ids, config, adapter_file), onnx_logits(onnx_dir, ids, config, None)


def logits_error(project: Path, name: str = "tiny", adapter: str = "travel"):
    """(error with adapter, size of the adapter's effect, error without adapter), relative L2."""
    tuned, plain, with_adapter, without = all_logits(project, name, adapter)
    return _relative(with_adapter, tuned), _relative(tuned, plain), _relative(without, plain)


def adapter_effect_error(project: Path, name: str = "tiny", adapter: str = "travel") -> float:
    """How far the adapter's effect on the ONNX logits (with minus without) is from its effect in
    torch, relative: the adapter's own computation, apart from the int4/int8 error of the base."""
    tuned, plain, with_adapter, without = all_logits(project, name, adapter)
    return _relative(with_adapter - without, tuned - plain)
