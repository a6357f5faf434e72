"""finetune: one adapter's LoRA, trained by Olive's LoRA pass against exactly the AWQ-quantized weights.

transformers 5 loads AWQ checkpoints only through gptqmodel, so the frozen base given to Olive is
the AWQ checkpoint dequantized exactly (ml/awq_weights.py): the adapter learns against the int4 grid.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from tasks.engine.stage import Stage

DTYPES = {"cuda": "bfloat16", "cpu": "float32"}  # training's compute dtype, per device

STAGE = Stage(
    name="finetune",
    module=__name__,
    doc="LoRA finetune of an adapter (Olive) against the dequantized AWQ weights",
    output="models/{name}/ft/{adapter}",
    upstream=("data", "quantize"),
    libraries=("peft", "accelerate", "tokenizers"),  # Olive's LoRA pass: peft, the HF Trainer (accelerate)
    params=("finetune", "template"),
    devices=lambda params: {"device": params.finetune.device},
    dtypes=DTYPES,
)


def olive_config(params, base: Path, train: Path, work: Path, dtype: str, targets: list[str]) -> dict:
    """An Olive workflow: one LoRA pass over the train split in the lab's template."""
    from tasks.ml import chat_examples
    from tasks.ml.awq_weights import ships_code

    remote = ships_code(base)
    cfg = params.finetune
    data = {
        "name": "train_data",
        "type": "HuggingfaceContainer",
        "load_dataset_config": {"data_name": "json", "data_files": str(train), "split": "train"},
        # The served prompt's token ids, not Olive's text path (tasks/ml/chat_examples.py says why).
        "pre_process_data_config": {
            "type": chat_examples.register(),
            "params": {"template": params.template, "max_seq_len": cfg.max_seq_len},
        },
    }
    lora = {
        "type": "LoRA",
        "train_data_config": "train_data",
        "torch_dtype": dtype,
        "r": cfg.lora_r,
        "alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "target_modules": targets,
        "training_args": {
            "max_steps": cfg.max_steps,
            "learning_rate": cfg.learning_rate,
            "seed": cfg.seed,
            "per_device_train_batch_size": cfg.batch_size,
            "logging_steps": 1,
            "gradient_checkpointing": cfg.gradient_checkpointing,
            "save_strategy": "no",
            "report_to": "none",
        },
    }
    return {
        "input_model": {"type": "HfModel", "model_path": str(base), "load_kwargs": {"trust_remote_code": remote}},
        "data_configs": [data],
        "passes": {"lora": lora},
        "output_dir": str(work / "olive-out"),
        "cache_dir": str(work / "olive-cache"),  # a fresh cache per run: Olive keys data by path
        "log_severity_level": 1,
    }


MAX_SKIPPED_SHARE = 0.1  # more steps than this with a non-finite gradient: the run has diverged


def skip_nonfinite_steps(optimizer, skipped: list[int], step_of) -> None:
    """Make `optimizer.step()` skip an update whose gradients are not all finite and record the
    step, as mixed-precision loss scaling does; the HF Trainer would otherwise apply it and turn
    every weight into NaN. (The random-weight Phi-3.5 shape overflows the gradient on one batch:
    BENCHMARKS.md.)"""
    import torch

    step = optimizer.step

    def guarded(*args, **kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            optimizer.zero_grad(set_to_none=True)
            skipped.append(step_of())
            return None
        return step(*args, **kwargs)

    optimizer.step = guarded


def _progress_callback(channel, total: int, losses: list, skipped: list[int]):
    from transformers import TrainerCallback

    class Report(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            skip_nonfinite_steps(optimizer, skipped, lambda: state.global_step + 1)

        def on_step_end(self, args, state, control, **kwargs):
            channel.progress("training steps", state.global_step, total)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                norm = logs.get("grad_norm")
                entry = {
                    "step": state.global_step,
                    "loss": float(logs["loss"]),
                    "grad_norm": None if norm is None else float(norm),
                }
                losses.append(entry | ({"skipped": True} if state.global_step in skipped else {}))

    return Report


def _quiet_olive_telemetry() -> None:
    """Olive 0.13 sends a heartbeat even with OLIVE_DISABLE_TELEMETRY=1, then waits ~10 s at exit for
    an endpoint an offline build cannot reach (olive/telemetry/telemetry.py); only its CI check skips it."""
    os.environ["OLIVE_DISABLE_TELEMETRY"] = "1"
    from olive.telemetry import telemetry

    telemetry.Telemetry._is_ci_environment = staticmethod(lambda: True)


def _olive_ids_by_file_names() -> None:
    """Olive names its cache entries by a sha256 of every input-model file: 8.5 s of reading for
    Phi-3.5's 7.6 GB on the H200 (BENCHMARKS.md). Its cache here is a scratch folder used once,
    whose input model is written by this run: name it by its files' paths and sizes instead."""
    from olive.common.utils import hash_string
    from olive.model.config.model_config import ModelConfig

    def by_name_and_size(self, path: Path) -> list[str]:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        return [hash_string(f"{p}:{p.stat().st_size if p.is_file() else '-'}") for p in files]

    ModelConfig._get_file_hash = by_name_and_size


def _olive_raises_what_fails() -> None:
    """Olive 0.13 logs any error of a pass but a few types and returns no model (engine.py's
    run_accelerator): a full disk in its datasets cache became "no adapter". Every error is raised
    to the stage instead, which names it (a full disk as such)."""
    from olive.engine import engine

    engine.EXCEPTIONS_TO_RAISE = (Exception,)


def _olive_trains_the_model_given(load) -> None:
    """Olive's LoRA pass loads its base from the input model's folder; it gets `load()` instead:
    the AWQ checkpoint dequantized in memory, not written to the folder and read back (7.6 GB and
    ~10 s for Phi-3.5 on the H100, BENCHMARKS.md). The folder holds its config and tokenizer."""
    from olive.passes.pytorch.lora import LoRA

    LoRA.load_base_pytorch_model = lambda self, model_handler, config, **kwargs: load()


def check_trained(losses: list[dict], adapter: Path) -> None:
    """Fail on a diverged run: a non-finite loss or gradient that was not skipped, too many skipped
    steps, or a non-finite adapter (which every later stage would silently use)."""
    import math

    from safetensors.numpy import load_file

    from tasks.errors import StageError

    finite = lambda v: v is None or math.isfinite(v)  # noqa: E731
    skipped = [e["step"] for e in losses if e.get("skipped")]
    bad = next((e for e in losses if not e.get("skipped") and not (finite(e["loss"]) and finite(e["grad_norm"]))), None)
    weights_ok = all(math.isfinite(float(abs(t).max())) for t in load_file(adapter).values())
    if bad or not weights_ok:
        where = f"at step {bad['step']} (loss {bad['loss']}, grad norm {bad['grad_norm']})" if bad else ""
        raise StageError(f"training diverged {where}: the adapter is not finite; lower finetune.learning_rate")
    if len(skipped) > MAX_SKIPPED_SHARE * len(losses):
        raise StageError(
            f"training diverged: {len(skipped)} of {len(losses)} steps had a non-finite gradient "
            f"(steps {skipped[:8]}); lower finetune.learning_rate"
        )


def _write_adapter_config(src: Path, out: Path, paths) -> None:
    """peft's config names the (temporary) dequantized base; name the AWQ model instead, stably."""
    config = json.loads(src.read_text())
    config["base_model_name_or_path"] = paths.output("quantize").relative_to(paths.root).as_posix()
    config["target_modules"] = sorted(config["target_modules"])  # peft keeps a set: random order
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def run(params, paths, out: Path, channel) -> dict:
    from tasks.ml import device
    from tasks.ml.awq_weights import load_dequantized, write_plain_config
    from tasks.ml.lora_graph import resolve_targets

    dev = device.select(params.finetune.device, "finetune.device")
    dtype = DTYPES[dev]
    with tempfile.TemporaryDirectory(prefix=".finetune-", dir=paths.models) as scratch:
        work = Path(scratch)
        os.environ["HF_DATASETS_CACHE"] = str(work / "datasets")
        write_plain_config(paths.output("quantize"), work / "base", dtype)
        losses: list[dict] = []
        skipped: list[int] = []
        import transformers.trainer

        _quiet_olive_telemetry()
        _olive_ids_by_file_names()
        _olive_raises_what_fails()
        _olive_trains_the_model_given(lambda: load_dequantized(paths.output("quantize"), dtype, dev))
        from olive.workflows import run as olive_run

        # Olive builds the Trainer itself; its default callbacks are the hook for progress and loss.
        transformers.trainer.DEFAULT_CALLBACKS.append(
            _progress_callback(channel, params.finetune.max_steps, losses, skipped)
        )
        os.chdir(work)  # Olive turns config strings naming files in the CWD into paths
        # peft draws lora_A before the Trainer seeds anything: seed first, for the same adapter twice.
        transformers.set_seed(params.finetune.seed)
        train = paths.output("data") / "train.jsonl"
        targets = resolve_targets(params.finetune.target_modules, paths.output("quantize"))
        result = olive_run(olive_config(params, work / "base", train, work, dtype, targets))
        adapter = work / "olive-out" / "adapter"
        if not result.has_output_model() or not (adapter / "adapter_model.safetensors").is_file():
            raise RuntimeError("Olive's LoRA pass produced no adapter (Olive logs its errors and exits 0); see the log")
        check_trained(losses, adapter / "adapter_model.safetensors")
        shutil.copy(adapter / "adapter_model.safetensors", out / "adapter_model.safetensors")
        _write_adapter_config(adapter / "adapter_config.json", out, paths)
    os.chdir(paths.root)
    (out / "train_log.json").write_text(json.dumps({"device": dev, "dtype": dtype, "loss": losses}, indent=1) + "\n")
    return {
        "device": dev,
        "steps": params.finetune.max_steps,
        "first_loss": losses[0]["loss"],
        "last_loss": losses[-1]["loss"],
        "skipped_steps": len(skipped),
    }
