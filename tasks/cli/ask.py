"""`doit ask "question"`: the lab's small app. Loads the built ONNX model once and streams the
greedy answer token by token, with an adapter active or without one, in the chat template that
adapter was trained with (params.adapters.<name>.template, else the top-level one).

It reads the build and never writes: it answers from what `doit` last built (`doit smoke` first if
it is stale), and a running build does not block it (outputs are replaced in one rename).
"""

from __future__ import annotations

import time
from pathlib import Path

from doit.cmd_base import Command

from tasks import ui
from tasks.errors import StageError
from tasks.ml.chat_template import prompt_ids
from tasks.pipeline import project

USAGE_ERROR = 3  # doit's own code for a command line it cannot use


def adapters_of(params, paths) -> dict[str, Path]:
    """{adapter name: .onnx_adapter file} of the build, in the params' order."""
    return {name: paths.adapter_file(name) for name in params.adapter_names}


def chosen(opt_values: dict, available: dict[str, Path], model_dir: Path) -> list[str | None]:
    """The adapters to answer with, in order; None is the base model without an adapter."""
    if opt_values["all"]:
        return [*available, None]
    if opt_values["no_adapter"]:
        return [None]
    name = opt_values["adapter"] or next(iter(available))
    if name not in available:
        raise StageError(f"no adapter {name!r} in {model_dir}; adapters: {', '.join(available)}")
    return [name]


def load(params, model_dir: Path, available: dict[str, Path], device: str, names: list[str | None]):
    """(model, og.Tokenizer, og.Adapters with `names` loaded, the prompt encoder, device, seconds):
    one load for every answer."""
    import onnxruntime_genai as og

    from tasks.ml.genai import load_model, pick_device, prompt_tokenizer

    started = time.perf_counter()
    dev = pick_device(device or params.smoke.device, model_dir, "--device" if device else "smoke.device")
    model = load_model(model_dir, dev)
    adapters = og.Adapters(model)
    for name in filter(None, names):
        if not available[name].is_file():
            raise StageError(f"adapter {name!r}: {available[name]} is missing; build it with `doit adapter:{name}`")
        adapters.load(str(available[name]), name)
    encoder = prompt_tokenizer(model_dir)
    return model, og.Tokenizer(model), adapters, encoder, dev, time.perf_counter() - started


def answer(model, tokenizer, adapters, name: str | None, prompt_ids: list[int], max_tokens: int) -> None:
    """Stream one answer to the console as its tokens come, then a line with its speed."""
    from tasks.ml.genai import stream

    label = f"adapter {name}" if name else "no adapter"
    ui.console.print(f"[bold]{label}[/]")
    text = tokenizer.create_stream()
    started = time.perf_counter()
    first, count = None, 0
    for token in stream(model, prompt_ids, max_tokens, adapters, name):
        first = first or time.perf_counter() - started
        count += 1
        ui.console.out(text.decode(token), end="", highlight=False)
        ui.console.file.flush()
    seconds = time.perf_counter() - started
    speed = f"{count / seconds:.1f} tokens/s" if count else "no tokens"
    ui.console.print(f"\n[dim]{count} tokens, {speed}, first token after {1000 * (first or seconds):.0f} ms[/]")


def usage_problem(opt_values: dict, pos_args: list[str]) -> str | None:
    """What is wrong with the command line, if anything."""
    if not " ".join(pos_args).strip():
        return "a question is needed"
    if sum([opt_values["all"], opt_values["no_adapter"], bool(opt_values["adapter"])]) > 1:
        return "--adapter, --no-adapter and --all exclude each other"
    if opt_values["device"] not in ("", "auto", "cpu", "cuda"):
        return f"--device {opt_values['device']}: use auto, cpu or cuda"
    if opt_values["max_tokens"] < 0:
        return "--max-tokens must be a positive number"
    return None


class Ask(Command):
    doc_purpose = "answer a question with the built model, streamed, with an adapter or without"
    doc_usage = '[--adapter NAME | --no-adapter | --all] [--max-tokens N] [--device cpu|cuda] "question"'
    cmd_options = (
        {"name": "adapter", "long": "adapter", "type": str, "default": "", "help": "adapter (default: the first)"},
        {"name": "no_adapter", "long": "no-adapter", "type": bool, "default": False, "help": "the base model alone"},
        {"name": "all", "long": "all", "type": bool, "default": False, "help": "each adapter, then none"},
        {
            "name": "max_tokens",
            "long": "max-tokens",
            "type": int,
            "default": 0,
            "help": "default: smoke.max_new_tokens",
        },
        {"name": "device", "long": "device", "type": str, "default": "", "help": "cpu or cuda (default: smoke.device)"},
    )

    def execute(self, opt_values, pos_args):
        problem = usage_problem(opt_values, pos_args)
        if problem:
            ui.console.print(f"[bold red]error:[/] {problem}; usage: doit ask {self.doc_usage}")
            return USAGE_ERROR
        question = " ".join(pos_args).strip()
        params, paths = project()
        model_dir = paths.output("export")
        try:
            if not (model_dir / "genai_config.json").is_file():
                raise StageError(f"the model is not built yet ({model_dir} is missing): run `doit smoke` or `doit`")
            available = adapters_of(params, paths)
            names = chosen(opt_values, available, model_dir)
            model, tokenizer, adapters, encoder, dev, seconds = load(
                params, model_dir, available, opt_values["device"], names
            )
        except StageError as exc:
            ui.console.print(f"[bold red]error:[/] {exc}")
            return 1
        ui.console.print(f"[dim]{model_dir} on {dev}, loaded in {seconds:.1f} s[/]")
        for name in names:
            ids = prompt_ids(encoder, params.for_adapter(name).template, question)
            answer(model, tokenizer, adapters, name, ids, opt_values["max_tokens"] or params.smoke.max_new_tokens)
        return 0
