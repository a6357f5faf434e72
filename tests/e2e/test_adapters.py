"""Several adapters on one base model: each adapter's data, finetune, adapter file, smoke and evaluate
are its own steps (`finetune:support`), on one AWQ checkpoint and one ONNX model.

The project here is the tiny build with a second adapter, `support`, trained on its own data file
at another LoRA rank (8; travel's is 64) with its own template and prompts: one graph serves both.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import doit, edit_params, make_project, private_copy, streamed_answers
from tests.e2e.reference import adapter_effect_error, logits_error
from tests.e2e.test_azure import azure_env, configure, service

pytestmark = pytest.mark.slow

SUPPORT = """  support:
    data: data/support.jsonl
    template: "<|user|>\\n[support] {prompt}<|end|>\\n<|assistant|>\\n{response}<|end|>"
    finetune: {lora_r: 8, max_steps: 12}
    prompts: [how do I change my booking]
"""
CHAIN = ["data", "finetune", "adapter", "smoke", "evaluate"]  # the steps of one adapter, in build order


def chain(adapter: str) -> list[str]:
    return [f"{stage}:{adapter}" for stage in CHAIN]


def interleaved(*adapters: str) -> list[str]:
    """Every adapter's steps, in build order: each stage for every adapter, then the next stage."""
    return [f"{stage}:{a}" for stage in CHAIN for a in adapters]


def write_data(project: Path, rel: str, pick: slice, prefix: str) -> None:
    """A data set of its own, made from the travel records (so the tests need no other file)."""
    lines = (project / "data/data_sample_travel.jsonl").read_text(encoding="utf-8-sig").splitlines()
    records = [json.loads(line) for line in lines if line.strip()][pick]
    text = "".join(
        json.dumps({"prompt": f"{prefix} {r['prompt']}", "response": r["response"][:160]}) + "\n" for r in records
    )
    (project / rel).write_text(text, encoding="utf-8")


def add_adapter(project: Path, block: str) -> None:
    edit_params(
        project, "    data: data/data_sample_travel.jsonl\n", "    data: data/data_sample_travel.jsonl\n" + block
    )


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Path:
    """The tiny build with the travel and support adapters, built by a plain `doit`."""
    project = make_project(tmp_path_factory.mktemp("adapters") / "project")
    write_data(project, "data/support.jsonl", slice(0, None, 3), "support:")
    add_adapter(project, SUPPORT)
    edit_params(project, "accuracy_level: 4", "accuracy_level: 1")  # fp32 compute: the graph's exact result
    run = doit(project)
    assert run.returncode == 0, run.output
    steps = ["base", "quantize", "export"]
    assert sorted(run.ran) == sorted([*steps, *chain("travel"), *chain("support")]), run.output
    return project


@pytest.fixture
def copy(two: Path, tmp_path: Path) -> Path:
    return private_copy(two, tmp_path / "project")


def _md5s(project: Path, *rels: str) -> dict[str, str]:
    return {rel: (project / rel).read_text().split("md5: ")[1].split()[0] for rel in rels}


MODEL = ("models/tiny/awq.dvc", "models/tiny/onnx-ao/model.dvc", "models/tiny/onnx-ao/adapters/travel.dvc")


def _append_support(project: Path) -> None:
    with (project / "data/support.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "support: can I bring a bike?", "response": "Yes, folded."}) + "\n")


def _add_faq(project: Path) -> None:
    write_data(project, "data/faq.jsonl", slice(1, None, 4), "faq:")
    add_adapter(project, "  faq:\n    data: data/faq.jsonl\n    finetune: {max_steps: 12}\n")


def _remove_support(project: Path) -> None:
    edit_params(project, SUPPORT, "")


def _support_back(project: Path) -> None:
    """Removed, built without it, then named again: every step of it comes back from the run-cache."""
    text = (project / "params.yaml").read_text()
    _remove_support(project)
    assert doit(project).returncode == 0
    (project / "params.yaml").write_text(text)


def _new_base(project: Path) -> None:
    edit_params(project, "seed: 1234", "seed: 99")  # base.synthetic.seed


EVERY_ADAPTER = interleaved("travel", "support")[2:]  # each adapter's steps after its data
# change: (apply, steps that run, steps restored from the run-cache, the model's files keep their bytes)
STALENESS = {
    "adapter B's data file": (_append_support, chain("support"), [], True),
    "adapter B's finetune key": (
        lambda p: edit_params(p, "{lora_r: 8, max_steps: 12}", "{lora_r: 8, max_steps: 6}"),
        chain("support")[1:],
        [],
        True,
    ),
    "adapter C added": (_add_faq, chain("faq"), [], True),
    "adapter B removed": (_remove_support, [], [], True),
    "adapter B removed and named again": (_support_back, [], chain("support"), True),
    # (the calibration file re-quantizes: tests/e2e/test_incremental.py, "data file")
    # Beneath every adapter: a new base (its seed) rebuilds everything after the base, both adapters'
    # chains included.
    "the base": (
        _new_base,
        ["base", "quantize", "finetune:travel", "finetune:support", "export", *EVERY_ADAPTER[2:]],
        [],
        False,
    ),
}


@pytest.mark.parametrize("change", list(STALENESS))
def test_a_change_rebuilds_exactly_what_depends_on_it(copy, change):
    apply, expected, restored, model_kept = STALENESS[change]
    before = _md5s(copy, *MODEL)
    apply(copy)
    run = doit(copy)
    assert run.returncode == 0, run.output
    assert (run.ran, run.restored) == (expected, restored), run.output
    assert (_md5s(copy, *MODEL) == before) == model_kept
    again = doit(copy)
    assert again.ran == again.restored == [], "a second run after the change does nothing"


def test_a_removed_adapter_leaves_the_build_and_the_report(copy):
    _remove_support(copy)
    run = doit(copy)
    assert run.returncode == 0 and "adapter support is no longer in params" in run.output, run.output
    for gone in ("models/tiny/ft/support", "models/tiny/ft/support.dvc", "data/prepared/tiny/support"):
        assert not (copy / gone).exists(), gone
    assert not (copy / "models/metrics/tiny/support").exists()
    assert (copy / "models/tiny/ft/travel.dvc").is_file()
    assert doit(copy, "report").returncode == 0
    page = (copy / "models/tiny/report/index.html").read_text()
    assert "Adapter travel" in page and "support" not in page


def test_each_adapter_file_matches_its_torch_reference_on_the_one_graph(two):
    """travel (rank 64) and support (rank 8) on one ONNX graph: each matches its own peft model, and
    what each adds to the logits is what it adds in torch (measured ~1e-6 at fp32 compute; at the
    default int8 compute the base's rounding moves support's small effect by ~16 %)."""
    for adapter in ("travel", "support"):
        error, effect, error_without = logits_error(two, adapter=adapter)
        assert error < 1e-3 and error_without < 1e-3 and effect > 0.05, (adapter, error, error_without, effect)
        assert adapter_effect_error(two, adapter=adapter) < 1e-3, adapter
    layout = json.loads((two / "models/tiny/onnx-ao/model/lora_layout.json").read_text())
    assert len(layout["branches"]) == 2 * 2  # 2 layers x (qkv_proj, o_proj): both adapters' targets
    for adapter, rank in (("travel", 64), ("support", 8)):
        metrics = json.loads((two / f"models/metrics/tiny/{adapter}/adapter.json").read_text())
        assert metrics["lora_r"] == rank


def test_smoke_and_evaluate_cover_every_adapter(two):
    support = json.loads((two / "models/tiny/smoke/support/answers.json").read_text())["answers"]
    assert [a["prompt"] for a in support] == ["how do I change my booking"]  # its own prompts
    for adapter in ("travel", "support"):
        m = json.loads((two / f"models/metrics/tiny/{adapter}/evaluate.json").read_text())
        evals = (two / f"data/prepared/tiny/{adapter}/eval.jsonl").read_text().splitlines()
        assert m["examples"] == len(evals) > 0
        assert m["perplexity_onnx_adapter"] == pytest.approx(m["perplexity_awq_adapter"], rel=0.01)
    run = doit(two, "report")
    page = (two / "models/tiny/report/index.html").read_text()
    assert run.returncode == 0 and "Adapter travel" in page and "Adapter support" in page
    assert page.count('src="data:image/png;base64,') == 8  # four figures per adapter


def test_ask_streams_each_adapter_and_none_from_one_load(two):
    """--all: each adapter in its own template, then none; one model load."""
    run = doit(two, "ask", "--all", "--max-tokens", "8", "how do I change my booking")
    assert run.returncode == 0, run.output
    said = streamed_answers(run.output)
    assert list(said) == ["adapter travel", "adapter support", "no adapter"]
    assert run.output.count("loaded in") == 1
    smoke = json.loads((two / "models/tiny/smoke/support/answers.json").read_text())["answers"][0]
    alone = streamed_answers(doit(two, "ask", "--adapter", "support", "--max-tokens", "8", smoke["prompt"]).output)
    assert alone["adapter support"][0] == said["adapter support"][0]
    # smoke's 64-token answer starts with the 8 tokens asked for here (the same greedy decoding)
    assert smoke["answer"].startswith(said["adapter support"][0])
    run = doit(two, "ask", "--adapter", "french", "hello")
    assert run.returncode == 1 and "adapters: travel, support" in run.output


def test_force_one_adapters_finetune_alone(copy):
    run = doit(copy, "-s", "-a", "finetune:support")
    assert run.returncode == 0 and run.ran == ["finetune:support"], run.output
    assert doit(copy).ran == []  # the same bytes: nothing after it is stale
    info = doit(copy, "info", "adapter:support")
    assert info.output.startswith("adapter:support: up to date"), info.output


def test_register_publishes_one_folder_with_every_adapter(copy, tmp_path):
    configure(copy)
    state = tmp_path / "azure"
    run = doit(copy, env=azure_env(state))
    assert run.returncode == 0 and run.ran == ["register"], run.output
    models, _ = service(state)
    version = models["ft-for-travel"]["1"]["properties"]
    assert version["tags"]["adapters"] == "travel,support"
    assert {"perplexity_onnx_adapter.travel", "perplexity_onnx_adapter.support"} <= set(version["tags"])
    content = version["tags"]["dvc_md5"]
    blobs = next(state.glob(f"blobs/*/*/lab-models/ft-for-travel/{content}/model"))
    for adapter in ("travel", "support"):
        built = copy / f"models/tiny/onnx-ao/adapters/{adapter}/adapter_weights.onnx_adapter"
        assert (blobs / f"adapters/{adapter}.onnx_adapter").read_bytes() == built.read_bytes()
    assert (blobs / "model.onnx").is_file() and (blobs / "genai_config.json").is_file()
    # One adapter retrained: new content, the next version, both adapters in it again.
    edit_params(copy, "{lora_r: 8, max_steps: 12}", "{lora_r: 8, max_steps: 6}")
    run = doit(copy, env=azure_env(state))
    assert run.returncode == 0 and run.ran == [*chain("support")[1:], "register"], run.output
    models, _ = service(state)
    assert list(models["ft-for-travel"]) == ["1", "2"]
    assert models["ft-for-travel"]["2"]["properties"]["tags"]["adapters"] == "travel,support"


def test_a_data_file_in_use_by_an_adapter_is_named_when_missing(copy):
    (copy / "data/support.jsonl").unlink()
    run = doit(copy)
    assert run.returncode == 1 and run.failed == ["data:support"], run.output
    assert "adapters.support.data: data/support.jsonl does not exist" in run.output
    shutil.rmtree(copy / "models/tiny/ft/travel")  # the other adapter's chain is independent
    assert doit(copy, "finetune:travel").returncode == 0
