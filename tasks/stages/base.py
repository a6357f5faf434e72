"""base: materialize the base HF checkpoint (a synthetic Phi-3 made offline, a local folder, a hub id,
or an Azure ML model asset)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tasks.engine.stage import Stage
from tasks.paths import within

SYNTHETIC = ("synthetic", "tiny")


def _sections(params) -> tuple[str, ...]:
    """A base from an Azure ML workspace also depends on which workspace; a synthetic one on how
    its corpus is split (data)."""
    if params.base.source in SYNTHETIC:
        return ("base", "data")
    return ("base", "azure") if params.base.source == "azureml" else ("base",)


def _outside(params, paths) -> dict:
    """A local folder or a GGUF file is an input from outside the build (its content counts); a
    synthetic base trains its tokenizer on the calibration files' train split (never an adapter's
    data as such: editing another adapter's file leaves the base alone)."""
    if params.base.source in SYNTHETIC:
        from tasks.ml.qa_data import calibration_inputs

        return calibration_inputs(paths, params.calibration_files())
    if params.base.source == "local":
        return {"local_base": Path(params.base.path).expanduser()}
    if params.base.source == "gguf":
        from tasks.ml.gguf import locate

        try:
            return {"gguf_file": locate(params.base.gguf, paths.root)}
        except FileNotFoundError:
            return {"gguf_file": paths.root / "(not installed)"}  # "missing"; the stage says why
    return {}


def _caveats(params) -> list[str]:
    if params.base.source == "hf" and not params.base.revision:
        return [
            f"base.revision is not pinned: {params.base.model_id} is taken at the hub's main as it is when "
            "base builds (the commit is recorded); a later push to the model does not make base stale. "
            "Pin a commit in base.revision for repeatable builds"
        ]
    return []


STAGE = Stage(
    name="base",
    module=__name__,
    doc="Materialize the base model (synthetic Phi-3 made offline, GGUF file, local folder, hub id, Azure ML asset)",
    output="models/{name}/base",
    libraries=("gguf", "accelerate"),  # transformers reads a GGUF file through gguf, loads through accelerate
    params_when=_sections,
    external_inputs=_outside,
    online=lambda params: params.base.source == "hf",  # the one stage that may reach a model hub
    caveats=_caveats,
)

# What a causal-LM checkpoint needs downstream; other files of a hub repo are not fetched, and a
# checkpoint's own Python files only when params trust them (base.trust_remote_code).
CHECKPOINT_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.txt"]
REMOTE_CODE_FILES = ["*.py"]


def _patterns(params) -> list[str]:
    return CHECKPOINT_FILES + (REMOTE_CODE_FILES if params.base.trust_remote_code else [])


def check_checkpoint(folder: Path, trust_remote_code: bool) -> None:
    """Refuse a folder that is not a causal-LM checkpoint transformers can load (with its own code
    only when params trust it)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from tasks.errors import StageError

    config = folder / "config.json"
    if not config.is_file():
        raise StageError(f"{folder}: no config.json; not a Hugging Face checkpoint")
    cfg = json.loads(config.read_text())
    archs = cfg.get("architectures") or []
    if not any(a.endswith("ForCausalLM") for a in archs):
        raise StageError(f"{config}: architectures {archs} has no *ForCausalLM; not a causal LM")
    if cfg.get("auto_map") and not trust_remote_code and cfg.get("model_type") not in CONFIG_MAPPING:
        raise StageError(
            f"{config}: the model ships its own code; set base.trust_remote_code: true to run it "
            f"(transformers has no model_type {cfg.get('model_type')!r} of its own)"
        )
    if not list(folder.glob("*.safetensors")):
        raise StageError(f"{folder}: no *.safetensors weights")


def use_native_code(folder: Path, trust_remote_code: bool) -> None:
    """A checkpoint that ships its own code (config.json's auto_map, e.g. Phi-3.5-mini-instruct) and
    whose model_type transformers knows is built with transformers' own class unless params trust
    the code: auto_map is dropped, so no later stage or library (AutoAWQ loads with
    trust_remote_code=True by default) can import it (check_checkpoint refused the other kind)."""
    if trust_remote_code:
        return
    for name in ("config.json", "tokenizer_config.json"):
        path = folder / name
        doc = json.loads(path.read_text()) if path.is_file() else {}
        if doc.pop("auto_map", None) is not None:
            path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def _copy_checkpoint(src: Path, out: Path, patterns: list[str]) -> None:
    for path in sorted(src.iterdir()):
        if path.is_file() and any(path.match(p) for p in patterns):
            shutil.copy2(path, out / path.name)


def _synthetic(params, paths, out: Path, channel) -> dict:
    from tasks.ml.qa_data import calibration_records
    from tasks.ml.synthetic_model import make_synthetic_model

    cfg = params.base.synthetic
    corpus = calibration_records(paths, params.calibration_files(), params.data.eval_fraction, params.data.seed)
    texts = [f"{r['prompt']}\n{r['response']}" for r in corpus]
    shape = "tiny" if params.base.source == "tiny" else cfg.shape
    make_synthetic_model(texts, out, shape, seed=cfg.seed, vocab_size=cfg.vocab_size, outliers=cfg.outliers)
    return {}


def _local(params, paths, out: Path, channel) -> dict:
    from tasks.errors import StageError

    src = Path(params.base.path).expanduser()
    if not src.is_dir():
        raise StageError(f"params.yaml: base.path: {params.base.path} is not a folder")
    check_checkpoint(src, params.base.trust_remote_code)
    _copy_checkpoint(src, out, _patterns(params))
    return {}


def _gguf(params, paths, out: Path, channel) -> dict:
    from tasks.errors import StageError
    from tasks.ml.gguf import locate, write_checkpoint

    try:
        gguf = locate(params.base.gguf, paths.root)
    except FileNotFoundError as exc:
        raise StageError(f"params.yaml: base.gguf: {exc}") from None
    if not gguf.is_file():
        raise StageError(f"params.yaml: base.gguf: {gguf} is not a file")
    write_checkpoint(gguf, out)
    return {}


def _hub(params, paths, out: Path, channel) -> dict:
    """The repo's checkpoint files at one commit. huggingface_hub joins file names to `local_dir` as
    they come, so every name is checked first, and only the checked names (at the commit they were
    listed at) are downloaded."""
    import glob
    from fnmatch import fnmatch

    from huggingface_hub import HfApi, snapshot_download

    cfg = params.base
    info = HfApi().model_info(cfg.model_id, revision=cfg.revision or "main")
    names = [s.rfilename for s in info.siblings or [] if any(fnmatch(s.rfilename, p) for p in _patterns(params))]
    for name in names:
        within(out, name, f"hub file of {cfg.model_id}:")
    exact = [glob.escape(name) for name in names]
    snapshot_download(cfg.model_id, revision=info.sha, local_dir=out, allow_patterns=exact)
    shutil.rmtree(out / ".cache", ignore_errors=True)  # hub bookkeeping, not part of the model
    return {"revision": info.sha}  # the commit downloaded (base.revision may be a branch, or unset)


def _azureml(params, paths, out: Path, channel) -> dict:
    """A registered model, downloaded through azure-ai-ml; registries often nest the checkpoint
    (an MLflow folder's data/model/), so the shallowest folder holding config.json is taken."""
    from tasks.azureml import client as azure
    from tasks.errors import StageError

    download = out / ".download"
    with azure.explained(f"downloading {params.base.asset}"):
        resolved = azure.download_model(
            params.base.asset, params.azure, download, lambda done, total: channel.progress("download", done, total)
        )
    configs = sorted(download.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise StageError(f"base.asset {params.base.asset} ({resolved}): no config.json; not a Hugging Face checkpoint")
    _copy_checkpoint(configs[0].parent, out, _patterns(params))
    shutil.rmtree(download)
    return {"asset": resolved}  # the name:version a label resolved to


SOURCES = {"synthetic": _synthetic, "tiny": _synthetic, "local": _local, "gguf": _gguf, "hf": _hub, "azureml": _azureml}


def run(params, paths, out: Path, channel) -> dict:
    found = SOURCES[params.base.source](params, paths, out, channel)
    check_checkpoint(out, params.base.trust_remote_code)
    use_native_code(out, params.base.trust_remote_code)
    config = json.loads((out / "config.json").read_text())
    layers = config.get("num_hidden_layers")
    return {"source": params.base.source, **found, "model_type": config.get("model_type"), "layers": layers}
