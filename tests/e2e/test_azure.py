"""Azure ML, offline: the register stage against tests/fakes/azure.py, which answers the REST calls
of azure-identity, azure-ai-ml and azure-storage-blob through azure-core's transport hook."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import PLAIN, ROOT, as_in_a_terminal, doit, edit_params
from tests.fakes.azure import ACCOUNT, ACCOUNT_KEY, CLIENT_SECRET, CONTAINER, NO_DATA_ROLE, add_model

pytestmark = pytest.mark.slow
ADAPTER_CHAIN = ["finetune:travel", "adapter:travel", "smoke:travel", "evaluate:travel"]

WORKSPACE = {
    "subscription_id: null": "subscription_id: 00000000-0000-0000-0000-0000000000aa",
    "resource_group: null": "resource_group: lab-rg",
    "workspace: null": "workspace: lab-ws",
}

WORKSPACE_IDS = ("00000000-0000-0000-0000-0000000000aa", "lab-rg", "lab-ws")


def azure_env(state: Path, secret: str = CLIENT_SECRET) -> dict:
    return {
        "PYTHONPATH": str(ROOT),  # tests.fakes.azure, for the stage's child process
        "LAB_AZURE_TRANSPORT": "tests.fakes.azure:FakeAzure",
        "FAKE_AZURE_STATE": str(state),
        "AZURE_TENANT_ID": "lab-tenant",
        "AZURE_CLIENT_ID": "lab-ci",
        "AZURE_CLIENT_SECRET": secret,
    }


def configure(project: Path) -> None:
    for old, new in WORKSPACE.items():
        edit_params(project, old, new)


def _outs_text(text: str) -> dict:
    return yaml.safe_load(text)["outs"]


def _outs(dvc_file: Path) -> dict:
    """The `outs:` of a .dvc file: the artifact's content hash and size."""
    return _outs_text(dvc_file.read_text())


def service(state: Path) -> tuple[dict, list[str]]:
    """The fake service's registered models and every request it answered."""
    models = state / "models.json"
    log = state / "requests.log"
    return (
        json.loads(models.read_text()) if models.exists() else {},
        log.read_text().splitlines() if log.exists() else [],
    )


@pytest.fixture
def registered(built_copy, tmp_path):
    """The built project with a workspace configured, registered once."""
    configure(built_copy)
    env = azure_env(tmp_path / "azure")
    run = doit(built_copy, env=env)
    assert run.returncode == 0, run.output
    assert run.ran == ["register"], run.output
    return built_copy, env, tmp_path / "azure"


def test_first_registration_publishes_the_model_folder(registered):
    project, _, state = registered
    models, log = service(state)
    version = models["ft-for-travel"]["1"]["properties"]
    record = json.loads((project / "models/registry/tiny.json").read_text())
    content = record["dvc_md5"]
    assert (record["name"], record["version"], record["adapters"]) == ("ft-for-travel", "1", ["travel"])
    assert version["modelType"] == "custom_model" and version["tags"]["dvc_md5"] == content
    assert version["tags"]["adapters"] == "travel"
    assert float(version["tags"]["perplexity_onnx_adapter.travel"]) > 1  # the evaluate stage's figure
    # Every file of the ONNX folder (model, genai config, tokenizer) and the adapter beside it, by name.
    prefix = state / "blobs" / ACCOUNT / CONTAINER / f"lab-models/ft-for-travel/{content}/model"
    export = project / "models/tiny/onnx-ao/model"
    published = {p.relative_to(prefix).as_posix(): p.read_bytes() for p in prefix.rglob("*") if p.is_file()}
    adapter = project / "models/tiny/onnx-ao/adapters/travel/adapter_weights.onnx_adapter"
    assert published == {p.name: p.read_bytes() for p in export.iterdir()} | {
        "adapters/travel.onnx_adapter": adapter.read_bytes()
    }
    assert {"genai_config.json", "tokenizer.json", "model.onnx"} <= set(published)
    folder = f"lab-models/ft-for-travel/{content}/model"
    assert version["modelUri"].endswith(f"datastores/workspaceblobstore/paths/{folder}")
    assert sum(line.startswith("PUT management.azure.com") for line in log) == 1
    assert any(f"{CONTAINER}/lab-models" in line for line in log)


def test_same_content_is_not_registered_again(registered):
    project, env, state = registered
    run = doit(project, "-s", "-a", "register", env=env)  # forced: asks the service again
    assert run.returncode == 0 and run.ran == ["register"], run.output
    assert "already registered" in run.output
    models, log = service(state)
    assert list(models["ft-for-travel"]) == ["1"]
    assert sum(line.startswith("PUT management.azure.com") for line in log) == 1
    assert json.loads((project / "models/registry/tiny.json").read_text())["version"] == "1"


def test_new_content_gets_the_next_version(registered):
    project, env, state = registered
    edit_params(project, "max_steps: 100", "max_steps: 20")
    run = doit(project, env=env)
    assert run.returncode == 0 and run.ran == [*ADAPTER_CHAIN, "register"], run.output
    models, _ = service(state)
    assert list(models["ft-for-travel"]) == ["1", "2"]
    tags = [models["ft-for-travel"][v]["properties"]["tags"]["dvc_md5"] for v in ("1", "2")]
    assert tags[0] != tags[1]
    assert json.loads((project / "models/registry/tiny.json").read_text())["version"] == "2"


def test_register_without_a_workspace_says_what_to_set(built_copy, tmp_path):
    run = doit(built_copy)  # not configured: the default build leaves register out
    assert run.returncode == 0 and run.ran == [] and "register" not in run.output
    run = doit(built_copy, "register", env=azure_env(tmp_path / "azure"))
    assert run.returncode == 1 and run.failed == ["register"]
    assert "azure.subscription_id, azure.resource_group, azure.workspace not set" in run.output
    assert "AZURE_CLIENT_SECRET" in run.output  # where credentials come from instead
    assert not (built_copy / "models/registry").exists() and not (built_copy / "models/tiny/registry.dvc").exists()
    assert service(tmp_path / "azure")[1] == []  # nothing was sent


def test_auth_failure_is_clear_and_records_nothing(built_copy, tmp_path):
    configure(built_copy)
    run = doit(built_copy, "register", env=azure_env(tmp_path / "azure", secret="wrong-secret"))
    assert run.returncode == 1 and run.failed == ["register"]
    assert "Azure sign-in failed while registering model ft-for-travel" in run.output
    assert "AADSTS7000215" in run.output and "Traceback" not in run.output
    models, log = service(tmp_path / "azure")
    assert models == {} and not any("management.azure.com" in line for line in log)
    assert not (built_copy / "models/registry").exists() and not (built_copy / "models/tiny/registry.dvc").exists()
    assert "wrong-secret" not in (built_copy / "logs/register.log").read_text()


def test_blob_storage_is_reached_with_the_identity_first(registered):
    _, _, state = registered
    log = service(state)[1]
    assert not any("listSecrets" in line for line in log)  # the account key was never fetched
    assert any(line.startswith("PUT labstore.blob.core.windows.net") for line in log)


# Every secret the fake hands out or accepts: the client secret, bearer tokens, the account key, a SAS.
SECRETS = (CLIENT_SECRET, "fake-token-", ACCOUNT_KEY, "fake-account-key", "sig=fake-sas")


def test_no_secret_in_any_record_log_or_tag(built_copy, tmp_path):
    """Every Azure path in one run: an identity without a data role on the storage account (so the
    account key is fetched), a base from a registry (through a SAS URI), finetune as a job (its
    `device: auto` now resolves on the compute the job names: it rebuilds there), register. Then no
    secret is in any record, log, tag, metrics file or params."""
    state = tmp_path / "azure"
    add_model(state, built_copy / "models/tiny/base", "phi-lab", "3", registry="azureml")
    (state / NO_DATA_ROLE).touch()
    _use_asset(built_copy, "azureml://registries/azureml/models/phi-lab/versions/3")
    _remote(built_copy, "finetune")
    run = doit(built_copy, env=azure_env(state))
    assert run.returncode == 0 and run.ran == ["base", "finetune:travel", "register"], run.output
    assert "submitted Azure ML job" in (built_copy / "logs/finetune.travel.log").read_text()
    log = service(state)[1]
    assert any("listSecrets" in line for line in log) and any("/datarefs/phi-lab/" in line for line in log)
    files = [*built_copy.rglob("*.dvc"), *(built_copy / "models/metrics").rglob("*.json"), *built_copy.glob("logs/*")]
    files += [*(built_copy / ".dvc/cache/runs").rglob("*"), built_copy / "models/registry/tiny.json"]
    files += [state / "models.json", state / "jobs.json", built_copy / "params.yaml"]
    for path in files:
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not [secret for secret in SECRETS if secret in text], path


# -- base.source: azureml --------------------------------------------------------------------------


def _use_asset(project: Path, asset: str) -> None:
    edit_params(project, "  source: synthetic   #", f"  source: azureml\n  asset: {asset}\n  #")


@pytest.mark.parametrize("form", ["registry", "workspace"])
def test_base_from_an_azureml_asset(built_copy, tmp_path, form):
    """A registered copy of the built base comes back byte for byte, so nothing after base rebuilds."""
    state = tmp_path / "azure"
    base_dvc = (built_copy / "models/tiny/base.dvc").read_text()
    if form == "registry":
        add_model(state, built_copy / "models/tiny/base", "phi-lab", "3", registry="azureml")
        asset, call = "azureml://registries/azureml/models/phi-lab/labels/latest", "/datarefs/phi-lab/versions/3"
    else:
        configure(built_copy)
        add_model(state, built_copy / "models/tiny/base", "phi-lab", "3", workspace=WORKSPACE_IDS)
        asset, call = "azureml:phi-lab:3", f"GET {ACCOUNT}.blob.core.windows.net/{CONTAINER}/LocalUpload/phi-lab/3/"
    _use_asset(built_copy, asset)
    run = doit(built_copy, env=azure_env(state))
    registers = ["register"] if form == "workspace" else []  # a workspace in params: register is in the build
    assert run.returncode == 0 and run.ran == ["base", *registers], run.output
    assert _outs(built_copy / "models/tiny/base.dvc") == _outs_text(base_dvc)
    assert "phi-lab:3" in (built_copy / "models/tiny/base.dvc").read_text()  # the version a label resolved to
    assert any(call in line for line in service(state)[1])


def test_missing_azureml_asset_is_a_clear_error(built_copy, tmp_path):
    configure(built_copy)
    _use_asset(built_copy, "azureml:no-such-model:1")
    run = doit(built_copy, env=azure_env(tmp_path / "azure"))
    assert run.returncode == 1 and run.failed == ["base"] and run.ran == []
    assert "Azure ML refused downloading azureml:no-such-model:1: HTTP 404" in run.output
    assert (built_copy / "models/tiny/base/model.safetensors").is_file()  # the previous base is kept


# -- jobs.executor: azureml ------------------------------------------------------------------------


def _remote(project: Path, stage: str) -> None:
    configure(project)
    edit_params(project, "  executor: {}", f"  executor: {{{stage}: azureml}}")
    edit_params(project, "  compute: null", "  compute: gpu-cluster")
    edit_params(project, "  environment: null", "  environment: azureml:olive-lab:1")
    edit_params(project, "  poll_seconds: 10", "  poll_seconds: 0.2")


def test_a_stage_runs_as_an_azureml_job_and_builds_what_a_local_run_builds(built_copy, tmp_path):
    state = tmp_path / "azure"
    local = _outs(built_copy / "models/tiny/ft/travel.dvc")
    _remote(built_copy, "finetune")
    run = doit(built_copy, "-s", "-a", "finetune", env=azure_env(state))
    assert run.returncode == 0 and run.ran == ["finetune:travel"], run.output
    assert _outs(built_copy / "models/tiny/ft/travel.dvc") == local  # same bytes as the local build
    jobs = json.loads((state / "jobs.json").read_text())
    (job,) = jobs.values()
    props = job["properties"]
    assert props["status"] == "Completed" and props["computeId"].endswith("/computes/gpu-cluster")
    assert props["command"].startswith("cd ${{inputs.code}} && python -m tasks.azureml.job_entry finetune:travel ")
    assert set(props["inputs"]) == {"code", "data__travel", "quantize"}
    log = (built_copy / "logs/finetune.travel.log").read_text()
    assert f"submitted Azure ML job {job['name']}" in log and '[job] {"event": "summary"' in log
    # Tracked like a local build: nothing after finetune is stale (register is new: a workspace is set).
    assert doit(built_copy, env=azure_env(state)).ran == ["register"]
    # Inputs are uploaded once per content: a second job re-uses them.
    uploads = [line for line in service(state)[1] if line.startswith("PUT") and "/lab-artifacts/" in line]
    run = doit(built_copy, "-s", "-a", "finetune", env=azure_env(state))
    assert run.returncode == 0 and len(json.loads((state / "jobs.json").read_text())) == 2
    assert [line for line in service(state)[1] if line.startswith("PUT") and "/lab-artifacts/" in line] == uploads


def test_a_job_that_fails_remotely_fails_the_stage_with_its_error_and_log(built_copy, tmp_path):
    _remote(built_copy, "finetune")
    before = (built_copy / "models/tiny/ft/travel.dvc").read_text()
    no_gpu = "  gradient_checkpointing: false\n  device: cuda"  # the fake's compute has none
    edit_params(built_copy, "  gradient_checkpointing: false\n  device: auto", no_gpu)
    run = doit(built_copy, env=azure_env(tmp_path / "azure"))
    assert run.returncode == 1 and run.failed == ["finetune:travel"] and run.ran == []
    remote_error = r"Azure ML job lab-tiny-finetune-travel-\w+ failed: params.yaml: finetune.device: cuda"
    assert re.search(remote_error, run.output), run.output
    assert "job log (last lines)" in run.output
    assert (built_copy / "models/tiny/ft/travel.dvc").read_text() == before
    assert (built_copy / "models/tiny/ft/travel/adapter_model.safetensors").is_file()


def test_azureml_executor_without_compute_says_what_to_set(built_copy, tmp_path):
    _remote(built_copy, "finetune")
    edit_params(built_copy, "  compute: gpu-cluster", "  compute: null")
    run = doit(built_copy, "-s", "-a", "finetune", env=azure_env(tmp_path / "azure"))
    assert run.returncode == 1 and run.failed == ["finetune:travel"]
    assert "params.yaml: jobs.compute not set" in run.output
    assert not any("/jobs/" in line for line in service(tmp_path / "azure")[1])


def _start_remote_finetune(project: Path, state: Path) -> subprocess.Popen:
    """`doit finetune` as an Azure ML job, long enough to interrupt; returns once the job runs."""
    _remote(project, "finetune")
    edit_params(project, "max_steps: 100", "max_steps: 150")
    proc = subprocess.Popen(
        [sys.executable, "-m", "doit", "finetune"],
        cwd=project,
        env={**os.environ, **PLAIN, **azure_env(state)},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=as_in_a_terminal,
    )
    jobs = state / "jobs.json"
    deadline = time.monotonic() + 120
    while not (jobs.exists() and '"Running"' in jobs.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    return proc


def _jobs(state: Path) -> list[dict]:
    return list(json.loads((state / "jobs.json").read_text()).values())


# SIGTERM to doit alone: doit stops its stage as on Ctrl-C, whose job follower cancels the job (the
# same handler as a terminal's SIGINT to the whole group; `make faults` runs that case too).
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"] if os.environ.get("LAB_FAULT_MATRIX") == "1" else ["SIGTERM"])
def test_ctrl_c_or_sigterm_cancels_the_running_job(built_copy, tmp_path, sig):
    state = tmp_path / "azure"
    proc = _start_remote_finetune(built_copy, state)
    if sig == "SIGINT":
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole process group
    else:
        os.kill(proc.pid, signal.SIGTERM)  # to doit alone
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "interrupted (Ctrl-C or SIGTERM): finetune:travel stopped" in output, output
    (job,) = _jobs(state)
    assert job["properties"]["status"] == "Canceled"
    assert any(line.startswith("POST") and line.endswith("/cancel") for line in service(state)[1])
    assert not (built_copy / "logs/finetune.travel.azureml-job.json").exists()


@pytest.mark.parametrize("then", ["same inputs", "inputs changed"])
def test_a_job_left_by_a_killed_run_is_reattached_or_cancelled(built_copy, tmp_path, then):
    """doit SIGKILLed while its job runs: the job is recorded; the next run follows that job to its
    end if the inputs are the same (no second job), and cancels it if they changed."""
    state = tmp_path / "azure"
    proc = _start_remote_finetune(built_copy, state)
    os.killpg(proc.pid, signal.SIGKILL)  # no cleanup runs: the job keeps running on Azure ML
    proc.communicate(timeout=60)
    (left,) = _jobs(state)
    assert left["properties"]["status"] == "Running"
    assert json.loads((built_copy / "logs/finetune.travel.azureml-job.json").read_text())["job"] == left["name"]
    if then == "inputs changed":
        edit_params(built_copy, "max_steps: 150", "max_steps: 20")
    run = doit(built_copy, "finetune", env=azure_env(state))
    assert run.returncode == 0 and run.ran == ["finetune:travel"], run.output
    jobs = {job["name"]: job["properties"]["status"] for job in _jobs(state)}
    log = (built_copy / "logs/finetune.travel.log").read_text()
    if then == "same inputs":
        assert jobs == {left["name"]: "Completed"}
        assert f"reattached to Azure ML job {left['name']}" in log
    else:
        assert jobs.pop(left["name"]) == "Canceled" and list(jobs.values()) == ["Completed"]
        assert f"cancelled Azure ML job {left['name']}, left running by an interrupted run" in log
    assert not (built_copy / "logs/finetune.travel.azureml-job.json").exists()
