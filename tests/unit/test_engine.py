"""The build engine without a build: derived code fingerprints, staleness keys, damage detection,
staging, the stage-process protocol, the stage list and the project you stand in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.engine import artifacts, protocol, store
from tasks.engine.fingerprint import code_of, diff_keys, fingerprint
from tasks.errors import StageError
from tasks.params import ParamsError
from tasks.pipeline import BY_NAME, STAGES, default_tasks, plan, project, read_again
from tests.conftest import make_project


@pytest.fixture
def checkout(tmp_path) -> Path:
    return make_project(tmp_path / "checkout")


def test_code_fingerprints_follow_imports_and_leave_the_engine_out():
    root = project()[1].root
    base = code_of(root, BY_NAME["base"].module)
    # base downloads Azure ML models through the client, and makes synthetic models: both count.
    assert {"tasks/stages/base.py", "tasks/ml/synthetic_model.py", "tasks/azureml/client.py"} <= set(base)
    evaluate = code_of(root, BY_NAME["evaluate"].module)
    assert {"tasks/ml/genai.py", "tasks/ml/rtn.py", "tasks/ml/awq_weights.py"} <= set(evaluate)
    for stage in STAGES:
        assert not [p for p in code_of(root, stage.module) if p.startswith(("tasks/engine/", "tasks/cli/"))]


def test_a_helper_only_base_uses_makes_only_base_stale(checkout):
    found, paths = plan(checkout)
    steps = {step: BY_NAME[step.split(":")[0]] for step in found.stages}
    before = {step: fingerprint(s, step, found, paths)["code"] for step, s in steps.items()}
    helper = checkout / "tasks/ml/synthetic_model.py"
    helper.write_text(helper.read_text() + "\n# reviewed\n")
    after = {step: fingerprint(s, step, found, paths)["code"] for step, s in steps.items()}
    changed = [name for name in before if diff_keys(before[name], after[name])]
    assert changed == ["base"]
    assert diff_keys(before["base"], after["base"]) == ["tasks/ml/synthetic_model.py"]


def test_the_template_rendering_is_code_of_exactly_the_stages_that_read_the_template():
    root = project()[1].root
    readers = {s.name for s in STAGES if "tasks/ml/chat_template.py" in code_of(root, s.module)}
    assert readers == {"quantize", "finetune", "smoke", "evaluate"}
    assert readers == {s.name for s in STAGES if "template" in s.params}


def test_libraries_are_what_the_code_imports_plus_what_a_stage_names(checkout):
    found, paths = plan(checkout)
    stage = lambda step: BY_NAME[step.split(":")[0]]  # noqa: E731
    # the CUDA builds (make setup on a GPU machine) provide the same modules under other names
    cuda_names = {"onnxruntime-gpu": "onnxruntime", "onnxruntime-genai-cuda": "onnxruntime-genai"}
    libs = {
        step: {cuda_names.get(d, d) for d in fingerprint(stage(step), step, found, paths)["libraries"]}
        for step in found.stages
    }
    assert {"gguf", "safetensors", "tokenizers", "transformers", "torch", "azure-ai-ml"} <= libs["base"]
    assert {"olive-ai", "peft", "accelerate", "tokenizers", "safetensors", "datasets"} <= libs["finetune:travel"]
    assert {"torch", "onnx", "onnxruntime-genai", "autoawq"} <= libs["export"]
    assert {"onnxruntime-genai", "onnxruntime", "transformers"} <= libs["smoke:travel"]
    assert libs["data:travel"] == set()  # the standard library only
    assert "azure-ai-ml" not in libs["quantize"] and "olive-ai" not in libs["quantize"]


def test_the_device_a_step_resolves_to_and_its_dtype_are_in_its_fingerprint(checkout, monkeypatch):
    from tasks.engine import fingerprint as fp

    found, paths = plan(checkout)
    steps = {step: BY_NAME[step.split(":")[0]] for step in found.stages}
    monkeypatch.setattr(fp, "cuda_present", lambda root: False)
    cpu = {step: fingerprint(stage, step, found, paths) for step, stage in steps.items()}
    assert cpu["quantize"]["device"] == {"device": "cpu", "dtype": "float32"}
    assert cpu["finetune:travel"]["device"] == {"device": "cpu", "dtype": "float32"}
    assert cpu["evaluate:travel"]["device"] == {"torch": "cpu", "onnx": "cpu", "dtype": "float32"}
    monkeypatch.setattr(fp, "cuda_present", lambda root: True)
    gpu = {step: fingerprint(stage, step, found, paths) for step, stage in steps.items()}
    changed = {step: diff_keys(cpu[step], gpu[step]) for step in steps}
    assert changed["quantize"] == ["device.device", "device.dtype"]
    assert changed["finetune:travel"] == ["device.device", "device.dtype"]
    # the ONNX model was exported for the CPU (export.device): smoke and evaluate's ONNX part stay there
    assert changed["evaluate:travel"] == ["device.dtype", "device.torch"]
    assert not changed["smoke:travel"] and not changed["export"] and not changed["base"]


def test_diff_keys_names_nested_changes():
    old = {"params": {"finetune": {"max_steps": 100, "lora_r": 64}}, "inputs": {"data": "a"}}
    new = {"params": {"finetune": {"max_steps": 30, "lora_r": 64}}, "inputs": {"data": "a", "base": "b"}}
    assert diff_keys(old, new) == ["inputs.base", "params.finetune.max_steps"]


def _tracked(root: Path, files: dict[str, bytes]) -> tuple[Path, Path, dict]:
    """A folder whose manifest sits in a DVC-style cache, its .dvc file and its recorded stats."""
    import hashlib

    out = root / "out"
    out.mkdir(parents=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    manifest = [{"relpath": n, "md5": hashlib.md5(d).hexdigest()} for n, d in files.items()]
    text = json.dumps(manifest).encode()
    md5 = hashlib.md5(text).hexdigest()
    obj = root / ".dvc/cache/files/md5" / md5[:2] / (md5[2:] + ".dir")  # as DVC files a folder manifest
    obj.parent.mkdir(parents=True)
    obj.write_bytes(text)
    dvc_file = root / "out.dvc"
    artifacts.write_yaml(dvc_file, {"outs": [{"md5": md5 + ".dir", "path": "out"}]})
    return out, dvc_file, artifacts.file_stats(out)


def test_damage_is_found_from_stats_and_rehashes_only_what_moved(tmp_path):
    out, dvc_file, recorded = _tracked(tmp_path, {"a.bin": b"aaaa", "b.bin": b"bbbb"})
    assert store.damage(tmp_path, out, dvc_file, recorded)[0] is None
    os.utime(out / "a.bin", ns=(1, 1))  # touched, same bytes: intact
    assert store.damage(tmp_path, out, dvc_file, recorded)[0] is None
    (out / "b.bin").write_bytes(b"bbbc")  # same size, other bytes
    assert "b.bin was modified after the build" in store.damage(tmp_path, out, dvc_file, recorded)[0]
    (out / "c.bin").write_bytes(b"")
    assert "files added or removed" in store.damage(tmp_path, out, dvc_file, recorded)[0]


def test_staging_replaces_only_on_success(tmp_path):
    final = tmp_path / "artifact"
    with artifacts.staging(final) as tmp:
        (tmp / "v1").write_text("1")
    with pytest.raises(RuntimeError), artifacts.staging(final) as tmp:
        (tmp / "v2").write_text("2")
        raise RuntimeError("stage failed")
    assert [p.name for p in final.iterdir()] == ["v1"]
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]  # no .tmp- or .old- folder left


STOPPED_TWICE = """
import os, shutil, signal, sys, time
from pathlib import Path
from tasks.engine import artifacts, protocol

real_rmtree = shutil.rmtree
def rmtree_after_a_second_ctrl_c(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)  # the parent forwards the terminal's Ctrl-C during cleanup
    time.sleep(0.2)
    real_rmtree(*args, **kwargs)
shutil.rmtree = rmtree_after_a_second_ctrl_c
protocol.stop_once_on_signals()
with artifacts.staging(Path(sys.argv[1])) as tmp:
    (tmp / "partial.bin").write_bytes(b"x")
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
"""


def test_a_second_ctrl_c_cannot_cut_the_cleanup_short(tmp_path):
    """A terminal's Ctrl-C reaches the stage and doit, and doit forwards it: the stage sees two.
    The second must not interrupt the removal of the partial output (it did, in CI)."""
    final = tmp_path / "artifact"
    proc = subprocess.run([sys.executable, "-c", STOPPED_TWICE, str(final)], capture_output=True, text=True)
    assert "KeyboardInterrupt" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_protocol_events_and_messages(tmp_path):
    read, write = os.pipe()
    channel = protocol.Channel(write, {"stage": "smoke"})
    channel.progress("prompts", 1, 2)
    channel.send("summary", tokens=3)
    channel._out.close()
    lines = os.fdopen(read).read().splitlines()
    assert [protocol.event(line) for line in lines] == [
        ("progress", {"bar": "prompts", "done": 1, "total": 2}),
        ("summary", {"tokens": 3}),
    ]
    assert protocol.event("a library's own print") == (None, {})
    assert protocol.explain(StageError("params.yaml: x: bad"), tmp_path, placed=False) == ("params.yaml: x: bad", 2)
    full = OSError(28, "No space left on device", str(tmp_path / "model.onnx"))
    message, code = protocol.explain(full, tmp_path, placed=False)
    assert code == 2 and message.startswith(f"disk full while writing {tmp_path / 'model.onnx'}")
    assert "is untouched" in message
    try:  # a library's own error raised from the full disk (datasets: DatasetGenerationError)
        try:
            raise OSError(27, "File too large")
        except OSError as cause:
            raise RuntimeError("An error occurred while generating the dataset") from cause
    except RuntimeError as wrapped:
        message, code = protocol.explain(wrapped, tmp_path, placed=False)
    assert code == 2 and message.startswith(f"disk full while writing {tmp_path} (File too large)"), message


def test_the_plan_is_what_the_params_make_of_the_stages(checkout):
    found, _ = plan(checkout)
    travel = str(checkout / "data/data_sample_travel.jsonl")
    # A synthetic base trains its tokenizer on the calibration file (by default the first adapter's).
    assert found.upstream("base") == [] and found.external("base") == {"calibration_0": travel}
    assert found.external("data:travel") == {"data_file": travel}
    params = checkout / "params.yaml"
    folder = checkout.parent / "checkpoint"
    params.write_text(params.read_text().replace("source: synthetic ", f"source: local\n  path: {folder}\n "))
    read_again()  # a new process, as the next `doit` would be
    found, _ = plan(checkout)  # the file changed: computed again, not taken from the memo
    assert found.external("base") == {"local_base": str(folder)}


def test_a_base_folder_from_home_is_expanded(checkout, monkeypatch):
    monkeypatch.setenv("HOME", str(checkout.parent))
    params = checkout / "params.yaml"
    params.write_text(params.read_text().replace("source: synthetic ", "source: local\n  path: ~/checkpoint\n "))
    read_again()
    assert plan(checkout)[0].external("base") == {"local_base": str(checkout.parent / "checkpoint")}


TWO_ADAPTERS = """adapters:
  travel:
    data: data/data_sample_travel.jsonl
  support:
    data: data/support.jsonl
    template: "<|user|>{prompt}<|assistant|>{response}<|end|>"
    finetune: {lora_r: 8, target_modules: [o_proj, gate_up_proj]}
"""


def test_each_adapter_is_its_own_chain_of_steps_on_one_model(checkout):
    params = checkout / "params.yaml"
    params.write_text(
        params.read_text().replace("adapters:\n  travel:\n    data: data/data_sample_travel.jsonl\n", TWO_ADAPTERS)
    )
    found, _ = plan(checkout)
    assert found.default() == [
        "data:travel", "data:support", "base", "quantize", "finetune:travel", "finetune:support", "export",
        "adapter:travel", "adapter:support", "smoke:travel", "smoke:support", "evaluate:travel", "evaluate:support",
    ]  # fmt: skip
    assert found.upstream("finetune:support") == ["data:support", "quantize"]
    assert found.upstream("adapter:support") == ["export", "finetune:support"]
    assert found.upstream("register") == [
        "export",
        "adapter:travel",
        "adapter:support",
        "evaluate:travel",
        "evaluate:support",
    ]
    # Each adapter's steps see its own params; the model's steps only what the model depends on.
    assert found.sections("finetune:support")["finetune"]["lora_r"] == 8
    assert found.sections("finetune:travel")["finetune"]["lora_r"] == 64
    assert found.sections("smoke:support")["template"].startswith("<|user|>{prompt}")
    assert found.sections("export")["lora_targets"] == ["auto", "gate_up_proj", "o_proj"]
    # Calibration stays the first adapter's file: support's data is no input of the model's steps.
    assert found.external("quantize") == {"calibration_0": str(checkout / "data/data_sample_travel.jsonl")}
    assert "adapters" not in found.sections("quantize") and "adapters" not in found.sections("export")


def test_a_no_op_plan_does_not_import_the_params_schema(checkout):
    probe = "import sys, tasks.pipeline as p; p.plan(); print('pydantic' in sys.modules)"
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-c", probe], cwd=checkout, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert run() == "True"  # the first time the params are validated
    assert run() == "False"  # then the memo of the plan is enough


def test_the_stage_list_is_in_build_order_and_register_is_opt_in():
    names = [s.name for s in STAGES]
    for i, stage in enumerate(STAGES):
        assert set(stage.upstream) <= set(names[:i]), stage.name
    assert [t.split(":")[0] for t in default_tasks()] == names[:-1] and names[-1] == "register"


def test_jobs_executor_must_name_a_stage(checkout):
    params = checkout / "params.yaml"
    params.write_text(params.read_text().replace("executor: {}", "executor: {finetun: azureml}"))
    with pytest.raises(ParamsError, match=r"jobs.executor.finetun: no such stage \(did you mean 'finetune'\?\)"):
        project(checkout)


def test_the_package_follows_the_checkout_you_stand_in(checkout):
    """With the first checkout's environment (its console scripts do not put the cwd on sys.path),
    the modules and the project root are the second checkout's."""
    probe = "import tasks.paths as p, tasks.pipeline as q; print(p.__file__); print(q.project()[1].root)"
    where = subprocess.run(
        [sys.executable, "-I", "-c", probe], cwd=checkout / "tasks", capture_output=True, text=True, check=True
    ).stdout.split()
    assert where == [str(checkout / "tasks" / "paths.py"), str(checkout)]


def test_what_killed_runs_left_is_swept_and_nothing_else(checkout):
    _, paths = plan(checkout)
    left = [
        paths.output("quantize").with_name(".tmp-awq-4242"),
        paths.output("export").with_name(".old-model-4242"),
        paths.models / ".finetune-abc123",
        paths.output("data:travel").with_name(".tmp-travel-7"),
    ]
    kept = [paths.output("quantize"), paths.models / "report"]
    for folder in left + kept:
        folder.mkdir(parents=True)
    assert sorted(artifacts.sweep_leftovers(paths)) == sorted(left)
    assert [f.exists() for f in left + kept] == [False] * len(left) + [True] * len(kept)


def test_reports_are_not_committed(checkout):
    subprocess.run(["git", "check-ignore", "-q", "models/tiny/report/index.html"], cwd=checkout, check=True)


def test_a_job_file_keeps_the_params_order(tmp_path):
    """The first adapter is the default and AWQ's calibration set: the stage process must see the
    adapters in params order (a job file written with sorted keys gave the base the wrong corpus)."""
    params = {"adapters": {"travel": {"data": "a"}, "support": {"data": "b"}}}
    job = protocol.read_job(protocol.write_job(tmp_path / "job.json", {"params": params}))
    assert list(job["params"]["adapters"]) == ["travel", "support"]


# Folder names that common tools take for generated output: GitHub's Python .gitignore template
# (unanchored, so they match at any depth) and pytest's default norecursedirs.
GENERATED = ["build", "dist", "downloads", "eggs", ".eggs", "lib", "lib64", "parts", "sdist", "var", "wheels",
             "*.egg-info", "env", "venv", "ENV", "htmlcov", "instance", "target", "*.egg", ".*", "_darcs", "CVS",
             "node_modules", "{arch}"]  # fmt: skip


def test_no_folder_of_the_code_looks_like_generated_output():
    """The engine lived in tasks/build/, which an unanchored `build/` in a .gitignore hides from git,
    pytest skips and code-structure tools leave out."""
    import fnmatch

    root = Path(__file__).resolve().parents[2]
    folders = [p.name for p in (root / "tasks").rglob("*") if p.is_dir() and p.name != "__pycache__"]
    assert folders and not [f for f in folders if any(fnmatch.fnmatchcase(f, g) for g in GENERATED)]


def test_a_spare_serves_only_the_environment_and_folder_it_was_started_with(tmp_path):
    """A step whose environment differs (an online stage, another GPU) gets a process of its own:
    the spare is stopped, not handed the step."""
    from tasks.engine import spare

    env, job, log = protocol.child_env(online=False), tmp_path / "job.json", tmp_path / "base.log"
    spare.start(env, tmp_path)
    waiting = spare._ready[2]
    assert spare.take("base", job, log, protocol.child_env(online=True), tmp_path) is None
    assert waiting.returncode is not None and spare._ready is None
    spare.start(env, tmp_path)
    waiting = spare._ready[2]
    assert spare.take("base", job, log, env, tmp_path / "elsewhere") is None
    assert waiting.returncode is not None
    spare.start(env, tmp_path)
    waiting = spare._ready[2]
    spare.discard()  # the build ended
    assert waiting.returncode is not None and spare._ready is None


def test_lab_spare_0_starts_no_spare(tmp_path, monkeypatch):
    from tasks.engine import spare

    monkeypatch.setenv(spare.OFF_ENV, "0")
    spare.start(protocol.child_env(online=False), tmp_path)
    assert spare._ready is None


def test_a_spare_is_started_only_while_a_step_of_the_run_is_still_to_come():
    """The reporter tells the spare which steps this doit run may still reach: none after the last
    (`doit finetune`: finetune's own step), and none outside what was selected."""
    import io

    from doit.task import Task

    from tasks.cli.reporter import Reporter
    from tasks.engine import spare

    noop = [lambda: None]
    tasks = {
        "data": Task("data", noop),
        "finetune:travel": Task("finetune:travel", noop, task_dep=["data"]),
        "finetune": Task("finetune", None, task_dep=["finetune:travel"]),  # a stage's group: no action
        "export": Task("export", noop, task_dep=["finetune"]),
    }
    reporter = Reporter(io.StringIO(), {"show_out": False, "show_err": False})
    try:
        reporter.initialize(tasks, ["finetune"])
        reporter.get_status(tasks["data"])
        assert spare.needed_after("data")
        reporter.get_status(tasks["finetune:travel"])
        assert not spare.needed_after("finetune:travel")  # export was not selected
    finally:
        spare._unreached = None
