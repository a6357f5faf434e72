"""End to end on the tiny model: every artifact, the ONNX model against AWQ and a torch reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tasks.pipeline import default_tasks
from tests.conftest import doit, edit_params
from tests.e2e.reference import logits_error

pytestmark = pytest.mark.slow
ALL = default_tasks()  # the steps of the default build, in build order


def test_clean_build_makes_every_artifact(built):
    models = built / "models" / "tiny"
    prepared = built / "data/prepared/tiny/travel"
    assert {"train.jsonl", "eval.jsonl", "stats.json"} <= {p.name for p in prepared.iterdir()}
    config = json.loads((models / "awq" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "awq"
    assert config["quantization_config"]["version"] == "gemm"
    adapter = sorted(p.name for p in (models / "ft" / "travel").iterdir())
    assert adapter == ["adapter_config.json", "adapter_model.safetensors", "train_log.json"]  # no base copy
    onnx_dir = models / "onnx-ao" / "model"
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "lora_layout.json"} <= {
        p.name for p in onnx_dir.iterdir()
    }
    assert [p.name for p in (models / "onnx-ao/adapters/travel").iterdir()] == ["adapter_weights.onnx_adapter"]
    steps = ("base", "awq", "ft/travel", "onnx-ao/model", "onnx-ao/adapters/travel", "smoke/travel", "eval/travel")
    for dvc_file in ["data/prepared/tiny/travel.dvc", *[f"models/tiny/{p}.dvc" for p in steps]]:
        assert (built / dvc_file).is_file(), dvc_file


def test_training_log_has_a_loss_per_step(built):
    log = json.loads((built / "models/tiny/ft/travel/train_log.json").read_text())
    assert [e["step"] for e in log["loss"]] == list(range(1, 101))
    assert log["loss"][-1]["loss"] < log["loss"][0]["loss"]


def test_smoke_answers_with_and_without_adapter(built):
    answers = json.loads((built / "models/tiny/smoke/travel/answers.json").read_text())["answers"]
    assert answers[0]["prompt"] == "what is the best thing to see in chicago"
    assert answers[0]["new_tokens"] > 0 and answers[0]["tokens_per_second"] > 0
    # The adapter is really active: greedy answers of the same model differ with and without it.
    assert answers[0]["answer"] != answers[0]["answer_without_adapter"]


def test_a_cuda_export_loads_and_answers_on_the_cpu(built_copy):
    """The CUDA artifact (fp16 I/O and adapter, CUDA graphs in its config) runs on the CPU build of
    onnxruntime-genai too, and computes what the torch reference does (the int8-compute budget)."""
    edit_params(built_copy, "device: cpu         # cpu | cuda", "device: cuda        # cpu | cuda")
    run = doit(built_copy)
    assert run.returncode == 0 and run.ran == ["export", "adapter:travel", "smoke:travel", "evaluate:travel"], (
        run.output
    )
    config = json.loads((built_copy / "models/tiny/onnx-ao/model/genai_config.json").read_text())
    providers = config["model"]["decoder"]["session_options"]["provider_options"]
    assert [p["cuda"].get("enable_cuda_graph") for p in providers if "cuda" in p] == ["1"]
    answers = json.loads((built_copy / "models/tiny/smoke/travel/answers.json").read_text())
    assert (
        answers["device"] == "cpu"
        and answers["answers"][0]["answer"] != answers["answers"][0]["answer_without_adapter"]
    )
    error, adapter_effect, error_without = logits_error(built_copy)
    assert error < 2e-2 and error_without < 2e-2, (error, error_without)
    assert adapter_effect > 10 * error


def test_second_run_does_nothing(built_copy):
    run = doit(built_copy)
    assert run.returncode == 0 and run.ran == []
    assert "every stage is up to date" in run.output
    # The end-of-run table: each stage's time and size, and evaluate's figures.
    assert "build summary" in run.output and "eval perplexity: base" in run.output


def _tensor(init, folder):
    from onnx import helper, numpy_helper

    if not init.external_data:
        return numpy_helper.to_array(init)
    info = {e.key: e.value for e in init.external_data}
    dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
    count = int(info["length"]) // np.dtype(dtype).itemsize
    data = np.fromfile(folder / info["location"], dtype=dtype, count=count, offset=int(info.get("offset", 0)))
    return data.reshape(tuple(init.dims))


def _onnx_weights(onnx_dir):
    """{initializer prefix: float32 W [N, K]} dequantized from the ONNX MatMulNBits tensors."""
    import onnx

    # onnx.load refuses external data with several hard links (DVC's cache): read it ourselves.
    model = onnx.load(onnx_dir / "model.onnx", load_external_data=False)
    inits = {i.name: _tensor(i, onnx_dir) for i in model.graph.initializer}
    weights = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits" or node.name.startswith("/lm_head"):
            continue
        attrs = {a.name: a.i for a in node.attribute}
        q = inits[node.input[1]]  # [N, blocks, block_size / 2], two 4-bit values a byte, low first
        n, blocks, _ = q.shape
        values = np.stack([q & 0x0F, q >> 4], axis=-1).reshape(n, blocks, -1).astype(np.float32)
        scales = inits[node.input[2]].reshape(n, blocks, 1).astype(np.float32)
        packed = inits[node.input[3]].reshape(n, -1)
        zeros = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, -1)[:, :blocks, None]
        weights[node.input[1].rsplit(".MatMulNBits", 1)[0]] = ((values - zeros) * scales).reshape(n, attrs["K"])
    return weights


def test_onnx_base_weights_equal_dequantized_awq(built):
    from tasks.ml.awq_weights import dequantize_tensors, load_awq_state

    awq = dequantize_tensors(load_awq_state(built / "models/tiny/awq"), bits=4, group_size=128)
    onnx_w = _onnx_weights(built / "models/tiny/onnx-ao/model")
    assert len(onnx_w) == 2 * 5  # two layers x qkv (fused), o, gate, up, down
    for name, w in onnx_w.items():
        layer, folder, proj = name.split(".")[2], name.split(".")[3], name.split(".")[4]
        if proj in ("gate_proj", "up_proj"):
            full = awq[f"model.layers.{layer}.mlp.gate_up_proj.weight"].numpy()
            half = full.shape[0] // 2
            ref = full[:half] if proj == "gate_proj" else full[half:]
        else:
            hf_folder = "self_attn" if folder == "attn" else folder
            ref = awq[f"model.layers.{layer}.{hf_folder}.{proj}.weight"].numpy()
        # AWQ scales are fp16 and ONNX keeps them exactly: equal up to fp16 rounding of (q - z) * s.
        np.testing.assert_allclose(w, ref, rtol=1e-3, atol=1e-6, err_msg=name)


def test_onnx_logits_with_adapter_match_torch_reference(built):
    """accuracy_level 4 (the default) computes with int8 activations: a 2e-2 relative budget."""
    error, adapter_effect, error_without = logits_error(built)
    assert error < 2e-2 and error_without < 2e-2
    assert adapter_effect > 10 * error  # the comparison can tell an applied adapter from none


@pytest.fixture(scope="module")
def built_llama(tmp_path_factory) -> Path:
    """The Llama family through every stage: grouped KV heads, tied embeddings, separate q/k/v."""
    from tests.conftest import build

    edits = [("name: tiny ", "name: tinyllama "), ("shape: tiny ", "shape: tiny-llama ")]
    # fp32 compute in MatMulNBits: the comparison then shows the graph, not int8 activation rounding
    return build(tmp_path_factory.mktemp("llama"), *edits, ("accuracy_level: 4", "accuracy_level: 1"))


def test_llama_family_onnx_logits_with_adapter_match_torch_reference(built_llama):
    import onnx

    config = json.loads((built_llama / "models/tinyllama/ft/travel/adapter_config.json").read_text())
    assert config["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]  # auto, for Llama
    graph = onnx.load(built_llama / "models/tinyllama/onnx-ao/model/model.onnx", load_external_data=False).graph
    lora = sorted(i.name for i in graph.input if i.name.startswith("model.layers.0.") and "lora" in i.name)
    # export.fuse_lora: q/k/v in one int4 MatMul, one A product for the three (block rows of B)
    assert lora == [f"model.layers.0.attn.{p}.lora_{m}" for p in ("o_proj", "qkv_proj") for m in "AB"]
    error, adapter_effect, error_without = logits_error(built_llama, "tinyllama")
    assert error < 1e-3 and error_without < 1e-3
    assert adapter_effect > 10 * error


def test_the_fused_lora_graph_answers_as_the_unfused_one(built_llama, tmp_path):
    """export.fuse_lora: false builds the older graph (q/k/v apart, a branch per module): the same
    adapter gives the same greedy answers through both. (This project computes MatMulNBits in fp32,
    accuracy_level 1: at level 4, int8 activations, the two graphs' last-bit differences cross
    rounding steps, and on SmolLM2 their answers part after ~20 tokens, each as close to torch.)"""
    from tests.conftest import private_copy

    copy = private_copy(built_llama, tmp_path / "unfused")
    fused = json.loads((copy / "models/tinyllama/smoke/travel/answers.json").read_text())["answers"]
    edit_params(copy, "fuse_lora: true ", "fuse_lora: false ")
    run = doit(copy, "smoke")
    assert run.returncode == 0 and run.ran == ["export", "adapter:travel", "smoke:travel"], run.output
    layout = json.loads((copy / "models/tinyllama/onnx-ao/model/lora_layout.json").read_text())
    first = sorted(name for name in layout["branches"] if name.startswith("model.layers.0."))
    assert first == [f"model.layers.0.attn.{p}" for p in ("k_proj", "o_proj", "q_proj", "v_proj")]
    unfused = json.loads((copy / "models/tinyllama/smoke/travel/answers.json").read_text())["answers"]
    assert [a["answer"] for a in unfused] == [a["answer"] for a in fused]
    assert [a["answer_without_adapter"] for a in unfused] == [a["answer_without_adapter"] for a in fused]


def test_hf_source_downloads_over_the_hub_protocol(built_copy):
    """`source: hf` against a local hub serving the tiny checkpoint: base re-runs, its bytes are the
    same, so nothing after it does; no other stage may reach the network."""
    from tests.conftest import edit_params
    from tests.fakes.hub import FakeHub

    with FakeHub("lab/tiny-phi3", built_copy / "models/tiny/base") as hub:
        edit_params(built_copy, "source: synthetic ", "source: hf\n  model_id: lab/tiny-phi3\n ")
        run = doit(built_copy, env={"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(built_copy / ".hf")})
    assert run.returncode == 0, run.output
    assert run.ran == ["base"], run.output
    assert f"GET /lab/tiny-phi3/resolve/{hub.sha}/model.safetensors" in hub.requests
    assert not list((built_copy / "models/tiny/base").glob(".cache"))
    # Unpinned, the commit it got is recorded (the .dvc record, the metrics file, `doit versions`)
    # and `doit info base` says that the revision is not pinned.
    record = yaml.safe_load((built_copy / "models/tiny/base.dvc").read_text())["meta"]
    assert record["details"]["revision"] == hub.sha
    assert json.loads((built_copy / "models/metrics/tiny/base.json").read_text())["revision"] == hub.sha
    assert f"revision {hub.sha}" in " ".join(doit(built_copy, "versions", "--artifact", "base").output.split())
    info = doit(built_copy, "info", "base")
    assert "base: note: base.revision is not pinned: lab/tiny-phi3 is taken at the hub's main" in info.output


REMOTE_CODE = """import pathlib
pathlib.Path(__file__).with_name("REMOTE_CODE_RAN").touch()
raise RuntimeError("the hub's own model code ran")
"""


def test_a_hub_model_with_its_own_code_is_built_with_transformers_classes(built_copy, tmp_path):
    """The lab's model ships modeling code (config.json auto_map); its model_type is native to
    transformers, so every stage builds it with transformers' class and the hub's code never runs."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from tests.conftest import edit_params
    from tests.fakes.hub import FakeHub

    replica = shutil.copytree(built_copy / "models/tiny/base", tmp_path / "Phi-3.5-mini-instruct")
    weights = load_file(replica / "model.safetensors")
    weights["model.norm.weight"] = weights["model.norm.weight"] * 1.5  # other weights: every stage rebuilds
    save_file(weights, replica / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((replica / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_phi3.Phi3Config",
        "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM",
    }
    (replica / "config.json").write_text(json.dumps(config))
    for name in ("modeling_phi3.py", "configuration_phi3.py"):
        (replica / name).write_text(REMOTE_CODE)
    with FakeHub("microsoft/Phi-3.5-mini-instruct", replica) as hub:
        edit_params(built_copy, "source: synthetic ", "source: hf\n  model_id: microsoft/Phi-3.5-mini-instruct\n ")
        run = doit(built_copy, env={"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(built_copy / ".hf")})
    assert run.returncode == 0, run.output
    assert run.ran == ALL[1:], run.output
    base = built_copy / "models/tiny/base"
    assert "auto_map" not in json.loads((base / "config.json").read_text())
    assert not list(base.glob("*.py")) and not any(r.endswith(".py") for r in hub.requests)
    assert not list(built_copy.rglob("REMOTE_CODE_RAN")) and not (replica / "REMOTE_CODE_RAN").exists()
