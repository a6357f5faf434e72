"""register: publish the ONNX model folder (model, genai config, tokenizer) with every adapter's file
in it (`adapters/<name>.onnx_adapter`) to Azure ML.

Idempotent by content: every registered version carries a hash of the DVC content hashes of the
export and of each adapter file, by name, as the tag `dvc_md5`; a build whose hash is already
registered under the name reuses that version, new content gets the container's next version.
The outcome goes to `registry/model.json` in the stage output and, git-tracked, to
models/registry/<name>.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.azureml.client import workspace_missing
from tasks.engine.stage import Stage
from tasks.quality.names import KEY_METRICS

STAGE = Stage(
    name="register",
    module=__name__,
    doc="Publish the ONNX model and its adapters to the Azure ML model registry (needs params azure.*)",
    output="models/{name}/registry",
    upstream=("export", "adapter", "evaluate"),  # every adapter's; evaluate: its key metrics become tags
    params=("azure", "registry"),
    tracked_copies=(("model.json", "models/registry/{name}.json"),),  # name and version, for git
    # Only when params name a workspace does a plain `doit` register.
    in_default_build=lambda params: params.azure.configured,
    unable=lambda params: workspace_missing(params.azure, "register"),  # said before export builds
)

HASH_TAG = "dvc_md5"


def tags(params, paths, content: str) -> dict[str, str]:
    """The params' tags, the build, its content hash, the adapters' names and each adapter's key
    metrics (`perplexity_onnx_adapter.<adapter>`)."""
    found = {}
    for adapter in params.adapter_names:
        metrics_file = paths.metrics(f"evaluate:{adapter}")
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        keys = [*KEY_METRICS["evaluate"], *(k for k in metrics if k.startswith("answers_first_"))]
        found |= {f"{key}.{adapter}": str(metrics[key]) for key in keys if key in metrics}
    adapters = ",".join(params.adapter_names)
    return {**params.registry.tags, **found, "adapters": adapters, "lab_build": params.name, HASH_TAG: content}


def build_content(params, paths) -> str:
    """One hash for the model and its adapters by name: the export's DVC content hash and each
    adapter file's (a new adapter, or one retrained, is new content)."""
    import hashlib

    from tasks.engine.store import content_hash
    from tasks.errors import StageError

    parts = {"model": content_hash(paths.dvc_file("export"))}
    parts |= {f"adapter:{a}": content_hash(paths.dvc_file(f"adapter:{a}")) for a in params.adapter_names}
    missing = [step for step, md5 in parts.items() if not md5]
    if missing:
        raise StageError(f"no content hash for {', '.join(missing)}: run `doit` first")
    return hashlib.md5(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def registered_with(client, name: str, content: str):
    """The version of `name` already holding this content, or None (also when the name is new)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        versions = list(client.models.list(name=name))
    except ResourceNotFoundError:
        return None
    return next((m for m in versions if (m.tags or {}).get(HASH_TAG) == content), None)


def publish(client, params, paths, content: str, channel):
    """Upload the export folder under a content-addressed prefix and create the next version."""
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Model

    from tasks.azureml.client import Blobs

    cfg = params.registry
    store = Blobs.of_datastore(client)
    prefix = f"lab-models/{cfg.model_name}/{content}/model"
    store.upload_folder(paths.output("export"), prefix, lambda done, total: channel.progress("upload", done, total))
    for i, adapter in enumerate(params.adapter_names):  # beside the model, one file each, by name
        with paths.adapter_file(adapter).open("rb") as data:
            store.container.upload_blob(f"{prefix}/adapters/{adapter}.onnx_adapter", data, overwrite=True)
        channel.progress("adapters", i + 1, len(params.adapter_names))
    model = Model(
        name=cfg.model_name,
        path=store.uri(prefix),
        type=AssetTypes.CUSTOM_MODEL,
        description=cfg.description,
        tags=tags(params, paths, content),
    )
    return client.models.create_or_update(model)  # no version given: the container's nextVersion


def run(params, paths, out: Path, channel) -> dict:
    from tasks.azureml import client as azure

    azure.require_workspace(params.azure, "register")
    name = params.registry.model_name
    content = build_content(params, paths)
    with azure.explained(f"registering model {name}"):
        client = azure.ml_client(params.azure)
        model, status = registered_with(client, name, content), "already registered"
        if model is None:
            model, status = publish(client, params, paths, content, channel), "registered"
    record = {
        "name": model.name,
        "version": model.version,
        "id": model.id,
        "path": model.path,
        HASH_TAG: content,
        "adapters": params.adapter_names,
        "workspace": params.azure.workspace,
        "tags": model.tags,
    }
    (out / "model.json").write_text(json.dumps(record, indent=2) + "\n")
    channel.table("Azure ML model registry", ["model", "version", "status"], [[name, str(model.version), status]])
    version = int(model.version) if str(model.version).isdigit() else model.version
    return {"model": name, "version": version, "status": status}
