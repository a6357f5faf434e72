"""Synthetic models made offline (Phi-3, or Llama with grouped KV heads and tied embeddings): random
weights of a given shape and a BPE tokenizer trained on the data.

Random weights cost the same compute as trained ones, so stage times and sizes of the phi-3.5-mini
shape are representative; quality figures on them mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

# Phi-3's chat markers. They are added as whole tokens so the lab's template tokenizes as on Phi-3.
CHAT_TOKENS = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]

SHAPES = {
    # Small, but every linear layer's input width is a multiple of AWQ's group size (128), as on
    # the real model, so quantize, finetune and export run the same code paths.
    "tiny": {
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 4096,
        "original_max_position_embeddings": 4096,
        "rope_scaling": None,
    },
    # Phi-3.5's LongRoPE in small: two rotary caches, the long one past 4096 tokens (real factors
    # differ; these make the two caches differ). The genai builder (fp32) names lm_head by its
    # width: no other projection may be vocab_size wide (2 x intermediate here is 768).
    "tiny-longrope": {
        "hidden_size": 128,
        "intermediate_size": 384,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096,
        "rope_scaling": {
            "type": "longrope",
            "short_factor": [1.0 + 0.05 * i for i in range(16)],
            "long_factor": [1.0 + 2.0 * i for i in range(16)],
        },
    },
    # The Llama family as SmolLM2 has it: grouped KV heads, tied embeddings, separate q/k/v and
    # gate/up projections (the real default model is SmolLM2-135M-Instruct).
    "tiny-llama": {
        "family": "llama",
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
    },
    # microsoft/Phi-3.5-mini-instruct's public config.json (3.82 B parameters). Its LongRoPE factors
    # are not embedded here: these placeholders have the right length and cost the same.
    "phi-3.5-mini": {
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096,
        "vocab_size": 32064,
        "rope_scaling": {
            "type": "longrope",
            "short_factor": [1.0] * 48,
            "long_factor": [1.0 + i for i in range(48)],
        },
    },
}


def train_tokenizer(texts: list[str], vocab_size: int):
    """Train a byte-level BPE tokenizer on `texts` (deterministic: one thread, fixed corpus order)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=CHAT_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def save_tokenizer(tok, out_dir: Path) -> None:
    """Save as a transformers fast tokenizer that onnxruntime-genai also reads (GPT-2 style BPE)."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=CHAT_TOKENS[1:],
    )
    fast.save_pretrained(out_dir)
    # onnxruntime-genai picks its tokenizer implementation from tokenizer_class.
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "GPT2Tokenizer"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def add_outlier_channels(model, seed: int, channels: int = 4, norm_scale: float = 20.0, column_scale: float = 8.0):
    """Give random weights what trained models have and a quantizer must handle: in every decoder
    block, a few hidden channels with large activations (their layernorm weights x `norm_scale`) and
    a few input columns of each linear layer with large weights (x `column_scale`). Random init has
    nearly equal channels, on which AWQ and round-to-nearest look alike (and a broken AWQ looks fine)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    pick = lambda n: torch.randperm(n, generator=generator)[:channels]  # noqa: E731
    with torch.no_grad():
        for layer in model.model.layers:
            for name, module in layer.named_modules():
                if name.endswith("layernorm"):
                    module.weight[pick(module.weight.shape[0])] *= norm_scale
                elif isinstance(module, torch.nn.Linear):
                    module.weight[:, pick(module.in_features)] *= column_scale


def make_synthetic_model(
    texts: list[str], out_dir: Path, shape: str, seed: int, vocab_size: int, outliers: bool = False
) -> None:
    """Create a model of `shape` and its tokenizer in `out_dir`; the same inputs on the same kind of
    device give the same bytes. The large shape is initialized on CUDA when present (minutes on a CPU)."""
    import torch
    import transformers

    torch.set_num_threads(1)  # reductions in init must not depend on the core count
    tok = train_tokenizer(texts, vocab_size)
    save_tokenizer(tok, out_dir)
    end_id, eot_id = tok.token_to_id("<|end|>"), tok.token_to_id("<|endoftext|>")
    dims = {"vocab_size": tok.get_vocab_size(), **SHAPES[shape]}  # a larger vocab pads the embeddings
    family = dims.pop("family", "phi3")
    small = shape.startswith("tiny")
    dtype = torch.float32 if small else torch.bfloat16  # the published model is bf16
    config_class, model_class = {
        "phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM),
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    }[family]
    family_defaults = {"tie_word_embeddings": False, "sliding_window": None} if family == "phi3" else {}
    config = config_class(
        bos_token_id=eot_id,
        eos_token_id=[end_id, eot_id],
        pad_token_id=eot_id,
        torch_dtype=str(dtype).removeprefix("torch."),
        **(family_defaults | dims),
    )
    torch.manual_seed(seed)
    device = "cuda" if not small and torch.cuda.is_available() else "cpu"
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(config).eval()
    finally:
        torch.set_default_dtype(default)
    if outliers:
        add_outlier_channels(model, seed)
    model.save_pretrained(out_dir, safe_serialization=True)
    transformers.GenerationConfig(
        bos_token_id=eot_id, eos_token_id=[end_id, eot_id], pad_token_id=eot_id, do_sample=False
    ).save_pretrained(out_dir)
