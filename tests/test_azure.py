"""Azure ML, offline: the register stage against tests/fake_azure.py, which answers the REST calls
of azure-identity, azure-ai-ml and azure-storage-blob through azure-core's transport hook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, doit, edit_params
from tests.fake_azure import CLIENT_SECRET, CONTAINER

pytestmark = pytest.mark.slow

WORKSPACE = {
    "subscription_id: null": "subscription_id: 00000000-0000-0000-0000-0000000000aa",
    "resource_group: null": "resource_group: lab-rg",
    "workspace: null": "workspace: lab-ws",
}


def azure_env(state: Path, secret: str = CLIENT_SECRET) -> dict:
    return {
        "PYTHONPATH": str(ROOT),  # tests.fake_azure, for the stage's child process
        "LAB_AZURE_TRANSPORT": "tests.fake_azure:FakeAzure",
        "FAKE_AZURE_STATE": str(state),
        "AZURE_TENANT_ID": "lab-tenant",
        "AZURE_CLIENT_ID": "lab-ci",
        "AZURE_CLIENT_SECRET": secret,
    }


def configure(project: Path) -> None:
    for old, new in WORKSPACE.items():
        edit_params(project, old, new)


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
    assert content == project.joinpath("models/tiny/onnx-ao/model.dvc").read_text().split("md5: ")[1].split()[0]
    assert (record["name"], record["version"]) == ("ft-for-travel", "1")
    assert version["modelType"] == "custom_model" and version["tags"]["dvc_md5"] == content
    assert float(version["tags"]["perplexity_onnx_adapter"]) > 1  # the evaluate stage's figure
    # Every file of the ONNX folder (model, genai config, tokenizer, adapter) is in blob storage.
    prefix = state / "blobs" / f"lab-models/ft-for-travel/{content.removesuffix('.dir')}/model"
    export = project / "models/tiny/onnx-ao/model"
    assert {p.name: p.read_bytes() for p in prefix.iterdir()} == {p.name: p.read_bytes() for p in export.iterdir()}
    assert {"adapter_weights.onnx_adapter", "genai_config.json", "tokenizer.json"} <= {p.name for p in prefix.iterdir()}
    assert version["modelUri"].endswith(f"datastores/workspaceblobstore/paths/lab-models/ft-for-travel/{content.removesuffix('.dir')}/model")
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
    assert run.returncode == 0 and run.ran == ["finetune", "export", "smoke", "evaluate", "register"], run.output
    models, _ = service(state)
    assert list(models["ft-for-travel"]) == ["1", "2"]
    tags = [models["ft-for-travel"][v]["properties"]["tags"]["dvc_md5"] for v in ("1", "2")]
    assert tags[0] != tags[1]
    assert json.loads((project / "models/registry/tiny.json").read_text())["version"] == "2"


def test_register_without_a_workspace_says_what_to_set(built_copy, tmp_path):
    run = doit(built_copy)  # not configured: the default build leaves register out
    assert run.returncode == 0 and run.ran == [] and "register" not in run.output
    run = doit(built_copy, "register", env=azure_env(tmp_path / "azure"))
    assert run.returncode != 0 and run.failed == ["register"]
    assert "azure.subscription_id, azure.resource_group, azure.workspace not set" in run.output
    assert "AZURE_CLIENT_SECRET" in run.output  # where credentials come from instead
    assert not (built_copy / "models/registry").exists() and not (built_copy / "models/tiny/registry.dvc").exists()
    assert service(tmp_path / "azure")[1] == []  # nothing was sent


def test_auth_failure_is_clear_and_records_nothing(built_copy, tmp_path):
    configure(built_copy)
    run = doit(built_copy, "register", env=azure_env(tmp_path / "azure", secret="wrong-secret"))
    assert run.returncode != 0 and run.failed == ["register"]
    assert "Azure sign-in failed while registering model ft-for-travel" in run.output
    assert "AADSTS7000215" in run.output and "Traceback" not in run.output
    models, log = service(tmp_path / "azure")
    assert models == {} and not any("management.azure.com" in line for line in log)
    assert not (built_copy / "models/registry").exists() and not (built_copy / "models/tiny/registry.dvc").exists()
    assert "wrong-secret" not in (built_copy / "logs/register.log").read_text()


def test_no_secret_in_records_logs_or_tags(registered):
    project, _, state = registered
    files = [*project.rglob("*.dvc"), *(project / "models/metrics").rglob("*.json"), *(project / "logs").iterdir()]
    files += [project / "models/registry/tiny.json", state / "models.json", project / "params.yaml"]
    for path in files:
        assert CLIENT_SECRET not in path.read_text(errors="replace"), path
