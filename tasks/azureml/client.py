"""Azure ML access shared by the stages that use it: the client, the workspace's blob store, errors.

Credentials come only from the environment through DefaultAzureCredential (`az login`, a managed
identity, or AZURE_TENANT_ID / AZURE_CLIENT_ID / AZURE_CLIENT_SECRET); params name the workspace.
Blob storage is reached with that identity first; the workspace's stored account key only where
the identity has no data role on the storage account.
Files move through azure-storage-blob directly, not through the SDK's upload helpers, so that
every byte passes the one transport this module builds (and a path is content-addressed by the
artifact's DVC hash: an interrupted upload is simply redone).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
from pathlib import Path

from tasks.errors import StageError, redact
from tasks.paths import within

# For offline tests: "module:callable" returning an azure-core HttpTransport for every Azure call;
# only the tests' fakes may be named (an environment variable must not import arbitrary code).
TRANSPORT_ENV = "LAB_AZURE_TRANSPORT"
TRANSPORT_MODULES = "tests.fakes."

SIGN_IN_HELP = (
    "credentials come from the environment: `az login`, a managed identity, "
    "or AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET"
)


def transport_kwargs() -> dict:
    spec = os.environ.get(TRANSPORT_ENV)
    if not spec:
        return {}
    module, _, name = spec.partition(":")
    if not module.startswith(TRANSPORT_MODULES):
        raise StageError(f"{TRANSPORT_ENV}={spec}: only the tests' fakes ({TRANSPORT_MODULES}*) may stand in for Azure")
    return {"transport": getattr(importlib.import_module(module), name)()}


def workspace_missing(azure, what: str) -> str | None:
    """What to set in params for `what` to reach the Azure ML workspace, or None when it is set."""
    missing = azure.missing()
    if not missing:
        return None
    return (
        f"params.yaml: {', '.join(missing)} not set: {what} needs the Azure ML workspace's names there "
        f"(secrets never: {SIGN_IN_HELP})"
    )


def require_workspace(azure, what: str) -> None:
    missing = workspace_missing(azure, what)
    if missing:
        raise StageError(missing)


def credential(kwargs: dict):
    from azure.identity import DefaultAzureCredential

    # Never open a browser from a build; the CLI, environment and managed identity are enough.
    return DefaultAzureCredential(exclude_interactive_browser_credential=True, **kwargs)


def ml_client(azure, registry: str | None = None):
    """An MLClient on the workspace of params (or on a registry), all calls through one transport."""
    from azure.ai.ml import MLClient

    kwargs = transport_kwargs()
    scope = {"registry_name": registry} if registry else {"workspace_name": azure.workspace}
    return MLClient(credential(kwargs), azure.subscription_id, azure.resource_group, **scope, **kwargs)


@contextlib.contextmanager
def explained(doing: str):
    """Azure failures inside the block become a StageError saying what was being done; anything
    else (a StageError of ours, a bug, Ctrl-C) passes unchanged."""
    try:
        yield
    except StageError:
        raise
    except Exception as exc:
        error = explain(exc, doing)
        if error is None:
            raise
        raise error from exc


def explain(exc: Exception, doing: str) -> StageError | None:
    """A StageError for Azure failures a user can act on (no URL query string in it: SAS tokens
    travel there); None for anything else."""
    error = _explain(exc, doing)
    return StageError(redact(str(error))) if error else None


def _explain(exc: Exception, doing: str) -> StageError | None:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    if isinstance(exc, ClientAuthenticationError):
        first = str(exc).strip().splitlines()
        return StageError(f"Azure sign-in failed while {doing}: {' '.join(first[:4])}\n  ({SIGN_IN_HELP})")
    if isinstance(exc, HttpResponseError):
        code = getattr(getattr(exc, "error", None), "code", None) or exc.reason
        return StageError(f"Azure ML refused {doing}: HTTP {exc.status_code} {code}: {exc.message.splitlines()[0]}")
    if isinstance(exc, ServiceRequestError):
        return StageError(f"Azure could not be reached while {doing}: {exc}")
    return None


class Blobs:
    """A blob container, reached through the one transport; folders are blob-name prefixes."""

    def __init__(self, container):
        self.container = container

    @classmethod
    def of_datastore(cls, client, name: str | None = None) -> "Blobs":
        """A workspace datastore (the default one unless named), reached with the user's own
        identity (Entra ID); only where that identity has no data role on the storage account,
        with the secret the workspace holds for it (listSecrets: an account key or SAS)."""
        from azure.storage.blob import ContainerClient

        stores = client.datastores
        store = stores.get(name) if name else stores.get_default()
        kwargs = transport_kwargs()
        account_url = f"{store.protocol}://{store.account_name}.blob.{store.endpoint}"
        blobs = cls(ContainerClient(account_url, store.container_name, credential=credential(kwargs), **kwargs))
        if not blobs._identity_allowed():
            creds = stores.get(store.name, include_secrets=True).credentials
            secret = getattr(creds, "account_key", None) or getattr(creds, "sas_token", None)
            blobs = cls(ContainerClient(account_url, store.container_name, credential=secret, **kwargs))
        blobs.datastore = store.name
        return blobs

    def _identity_allowed(self) -> bool:
        """Whether the identity may read the container (one listing of at most one blob); a 403
        means no data role (Storage Blob Data Reader/Contributor) on the account."""
        from azure.core.exceptions import HttpResponseError

        try:
            list(next(self.container.list_blobs(results_per_page=1).by_page(), []))
        except HttpResponseError as exc:
            if exc.status_code == 403:
                return False
            raise
        return True

    @classmethod
    def of_sas(cls, sas_uri: str) -> tuple["Blobs", str]:
        """The container of a SAS URI to a folder (what a registry hands out), and the folder's prefix."""
        from urllib.parse import urlsplit, urlunsplit

        from azure.storage.blob import ContainerClient

        url = urlsplit(sas_uri)
        container, _, prefix = url.path.lstrip("/").partition("/")
        container_url = urlunsplit((url.scheme, url.netloc, f"/{container}", url.query, ""))
        return cls(ContainerClient.from_container_url(container_url, **transport_kwargs())), prefix

    def uri(self, prefix: str) -> str:
        return f"azureml://datastores/{self.datastore}/paths/{prefix}"

    def upload_folder(self, folder: Path, prefix: str, progress) -> None:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        for i, path in enumerate(files):
            with path.open("rb") as data:
                self.container.upload_blob(f"{prefix}/{path.relative_to(folder).as_posix()}", data, overwrite=True)
            progress(i + 1, len(files))

    def download_folder(self, prefix: str, dest: Path, progress) -> int:
        """Every blob under `prefix`/ into `dest`, keeping relative paths; returns the file count."""
        prefix = prefix.strip("/") + "/"
        names = [b.name for b in self.container.list_blobs(name_starts_with=prefix)]
        # Every name is checked before the first byte is written: a listing is remote data.
        targets = [within(dest, name[len(prefix) :], f"blob {name} under {prefix}") for name in names]
        for i, (name, target) in enumerate(zip(names, targets, strict=False)):
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                self.container.download_blob(name).readinto(out)
            progress(i + 1, len(names))
        return len(names)


ASSET = re.compile(
    r"azureml://registries/(?P<registry>[^/]+)/models/(?P<name>[^/]+)/(?:versions/(?P<version>[^/]+)|labels/(?P<label>[^/]+))"
    r"|azureml:(?P<ws_name>[^:@/]+)(?::(?P<ws_version>[^:@/]+)|@(?P<ws_label>[^:@/]+))"
)


def download_model(asset: str, azure, dest: Path, progress) -> str:
    """Download a registered model's files into `dest`; returns `name:version` it resolved to.
    A registry hands out a SAS URI to its storage (the data-reference call the SDK's own
    `models.download` makes); a workspace model lives on one of the workspace's datastores."""
    ref = ASSET.fullmatch(asset).groupdict()
    registry = ref["registry"]
    if not registry:
        require_workspace(azure, f"base.asset {asset}")
    name = ref["name"] or ref["ws_name"]
    client = ml_client(azure, registry=registry)
    model = client.models.get(name, version=ref["version"] or ref["ws_version"], label=ref["label"] or ref["ws_label"])
    if registry:
        from azure.ai.ml._utils._registry_utils import get_storage_details_for_registry_assets

        ops = client.models
        sas_uri, _ = get_storage_details_for_registry_assets(
            ops._registry_service_client, "models", name, model.version, ops._resource_group_name, registry, model.path
        )
        blobs, prefix = Blobs.of_sas(sas_uri)
    else:  # azureml://subscriptions/.../datastores/<store>/paths/<prefix>
        store, _, prefix = model.path.split("/datastores/", 1)[1].partition("/paths/")
        blobs = Blobs.of_datastore(client, store)
    if blobs.download_folder(prefix, dest, progress) == 0:
        raise StageError(f"base.asset {asset}: version {model.version} holds no files at {model.path}")
    return f"{name}:{model.version}"
