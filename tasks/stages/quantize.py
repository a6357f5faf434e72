"""quantize: AWQ 4-bit (activation-aware scale and clip search), calibrated on the train split of
its own data file(s): quantize.calibration, by default the first adapter's.

AutoAWQ is called directly: Olive 0.13's AutoAWQQuantizer refuses to run without a GPU and its CLI
calibrates only on a hub data set (../shared/notes/stack.md).
"""

from __future__ import annotations

from pathlib import Path

from tasks.engine.stage import Stage
from tasks.ml.chat_template import render
from tasks.ml.qa_data import calibration_inputs, calibration_records


def calibration_files(params, paths) -> dict:
    """quantize.calibration (default: the first adapter's data file) is an input from outside the build."""
    return calibration_inputs(paths, params.calibration_files())


DTYPES = {"cuda": "float16", "cpu": "float32"}  # the AWQ search's compute dtype, per device

STAGE = Stage(
    name="quantize",
    module=__name__,
    doc="AWQ 4-bit quantization, calibrated on a data file's train split (CUDA if present)",
    output="models/{name}/awq",
    upstream=("base",),
    libraries=("accelerate", "tokenizers"),  # under AutoAWQ and transformers
    params=("quantize", "template", "data"),  # data: the train/eval split, so no eval text calibrates
    external_inputs=calibration_files,
    devices=lambda params: {"device": params.quantize.device},
    dtypes=DTYPES,
)


def calibration_texts(params, paths) -> list[str]:
    """The calibration records in the chat template: the text the model will see after finetuning."""
    records = calibration_records(paths, params.calibration_files(), params.data.eval_fraction, params.data.seed)
    return [render(params.template, r["prompt"], r["response"]) for r in records]


def _check_group_size(base: Path, group: int) -> None:
    import json

    from tasks.errors import StageError

    config = json.loads((base / "config.json").read_text())
    for key in ("hidden_size", "intermediate_size"):
        if config.get(key, 0) % group:
            raise StageError(f"quantize.q_group_size: {group} does not divide the base model's {key} ({config[key]})")


def run(params, paths, out: Path, channel) -> dict:
    from tasks.errors import StageError
    from tasks.ml import device

    cfg = params.quantize
    dev = device.select(cfg.device, "quantize.device")
    import awq.quantize.quantizer as awq_quantizer
    import torch
    from awq import AutoAWQForCausalLM
    from transformers import AutoTokenizer

    from tasks.ml import awq_pack
    from tasks.ml.awq_search import ResidentQuantizer
    from tasks.ml.awq_weights import ships_code

    # AutoAWQ walks the layers in a tqdm loop; report it as our progress bar.
    awq_quantizer.tqdm = device.reporting_tqdm(channel, "AWQ layers")
    awq_pack.install()  # vectorized packing (same bytes)
    base = paths.output("base")
    texts = calibration_texts(params, paths)
    _check_group_size(base, cfg.q_group_size)
    remote = ships_code(base)  # AutoAWQ would trust any checkpoint's code by default
    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=remote)
    if sum(len(tokenizer.encode(t)) for t in texts[: cfg.max_calib_samples]) < cfg.max_calib_seq_len:
        raise StageError(
            f"quantize.max_calib_seq_len: the first {cfg.max_calib_samples} training texts hold fewer than "
            f"{cfg.max_calib_seq_len} tokens; lower it or add data"
        )
    dtype = getattr(torch, DTYPES[dev])
    model = AutoAWQForCausalLM.from_pretrained(
        str(base), torch_dtype=dtype, use_cache=False, safetensors=True, trust_remote_code=remote
    )
    quant_config = {
        "zero_point": cfg.zero_point,
        "q_group_size": cfg.q_group_size,
        "w_bit": cfg.w_bit,
        "version": cfg.version,
    }
    model.quantize(
        tokenizer,
        quant_config=quant_config,
        calib_data=texts,
        max_calib_samples=cfg.max_calib_samples,
        max_calib_seq_len=cfg.max_calib_seq_len,
        apply_clip=cfg.clip_search,
        quantizer_cls=ResidentQuantizer,  # AutoAWQ's search with the data kept on the device
    )
    model.save_quantized(str(out))
    tokenizer.save_pretrained(out)
    return {"device": dev, "calibration_texts": min(len(texts), cfg.max_calib_samples), **quant_config}
