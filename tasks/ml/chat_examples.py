"""The token ids Olive's LoRA pass trains on, made by chat_template (the ids the model is served).

Olive's own text-generation data path (olive/data/component/text_generation.py) formats the
template with `str.format(**row)` (a JSON-shaped template raises KeyError) and, with its default
`add_special_tokens`, trains on `f"{bos} {text} {eos}"` tokenized without special tokens: a BOS
and a stray space token before every prompt (SmolLM2: `<|im_start|>`, `Ġ`, `<|im_start|>`,
`system`...), which no served prompt has. This pre-process component replaces it: each record
becomes `chat_template.example_ids`, and the examples are joined and cut in blocks of
max_seq_len tokens, as Olive's `join` strategy does (every token is trained, as in the lab).
"""

from __future__ import annotations

from tasks.ml.chat_template import example_ids

COMPONENT = "lab_chat_template_examples"  # its name in Olive's data registry


def training_ids(tokenizer, template: str, records, max_seq_len: int) -> list[list[int]]:
    """The training sequences: every record's example ids joined, cut in full blocks (a last
    partial block is dropped, as Olive's join strategy does; none at all is an error)."""
    joined: list[int] = []
    for record in records:
        joined += example_ids(tokenizer, template, record["prompt"], record["response"])[0]
    blocks = [joined[i : i + max_seq_len] for i in range(0, len(joined) - max_seq_len + 1, max_seq_len)]
    if not blocks:
        raise ValueError(f"the training split holds {len(joined)} tokens, fewer than max_seq_len ({max_seq_len})")
    return blocks


def register() -> str:
    """Register the component with Olive (again is harmless); returns its name for a data config."""
    from olive.data.registry import Registry

    Registry.register_pre_process(COMPONENT)(_pre_process)
    return COMPONENT


def _pre_process(dataset, model_name: str, template: str, max_seq_len: int, trust_remote_code=None, **kwargs):
    """Olive pre-process component: a data set of {prompt, response} rows -> labelled blocks."""
    import torch
    from datasets import Dataset
    from olive.data.component.dataset import ClassificationDataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_name, trust_remote_code=bool(trust_remote_code))
    blocks = training_ids(tokenizer, template, dataset, max_seq_len)
    ids = [torch.tensor(block) for block in blocks]
    data = Dataset.from_dict({"input_ids": ids, "attention_mask": [torch.ones_like(t) for t in ids], "labels": ids})
    data.set_format("torch", output_all_columns=True)
    return ClassificationDataset(data, "labels")
