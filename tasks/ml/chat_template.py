"""The chat template: the one place where a prompt (and its answer) becomes text and token ids.

AWQ's calibration, LoRA training, evaluation, smoke and `doit ask` all call these functions, so
every stage that reads the template imports this module (a change here makes exactly them stale)
and the model is served the very token ids it was trained on:

- the prompt's ids are what the tokenizer makes of the rendered prompt with its own special
  tokens (a BOS where the tokenizer adds one, as HF tokenizers and onnxruntime-genai's do);
- a training or eval example is those ids followed by the answer's ids (the answer and the
  template's tail, tokenized without special tokens): the prompt part is identical by
  construction, whatever the template (no merge across the boundary can change it).

The template is filled by plain replacement of `{prompt}` and `{response}`, never `str.format`:
other braces (a JSON-shaped template) are text like any other. (params.py checks that a template
has both fields, in that order.)
"""

from __future__ import annotations

PROMPT, RESPONSE = "{prompt}", "{response}"


def render(template: str, prompt: str, response: str | None = None) -> str:
    """The template filled in; without a response, the text up to it (a generation prompt)."""
    head, tail = template.split(RESPONSE, 1)
    text = head.replace(PROMPT, prompt)
    return text if response is None else text + response + tail


def prompt_ids(tokenizer, template: str, prompt: str) -> list[int]:
    """The ids a served prompt is: the rendered prompt with the tokenizer's own special tokens."""
    return list(tokenizer(render(template, prompt))["input_ids"])


def example_ids(tokenizer, template: str, prompt: str, response: str) -> tuple[list[int], int]:
    """(ids of a whole example, how many of them are the prompt's): prompt_ids, then the answer and
    the template's tail without special tokens (the tail ends the turn: what stops generation)."""
    head = prompt_ids(tokenizer, template, prompt)
    tail = template.split(RESPONSE, 1)[1]
    answer = tokenizer(response + tail, add_special_tokens=False)["input_ids"]
    return head + list(answer), len(head)
