"""A stand-in for the Azure services the lab calls, plugged in through azure-core's `transport=` hook.

Every request the SDKs send (azure-identity, azure-ai-ml, azure-storage-blob) reaches `send()`,
which answers with the REST shapes the real services return: Entra ID's OpenID configuration and
client-credentials token; Azure ML's model containers and versions (nextVersion included),
datastores and their secrets, and command jobs; Blob storage's block-blob puts, block lists,
listings and ranged reads. State lives in a folder, so the separate processes of one `doit` run
(and later runs) see one service. The stage code selects it with
`LAB_AZURE_TRANSPORT=tests.fakes.azure:FakeAzure` and `FAKE_AZURE_STATE=<folder>`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import requests
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import HTTPAdapter
from urllib3 import HTTPResponse

TENANT_HOST = "login.microsoftonline.com"
ARM_HOST = "management.azure.com"
ACCOUNT = "labstore"  # the workspace's storage account
CONTAINER = "azureml-blobstore-0000"
DATASTORES = {"workspaceblobstore": CONTAINER, "workspaceartifactstore": "azureml"}  # name: container
REGISTRY_ACCOUNT, REGISTRY_CONTAINER = "registrystore", "registry-assets"  # a registry's storage
BLOB_HOST = r"(?P<account>[a-z0-9]+)\.blob\.core\.windows\.net"
DISCOVERY_HOST = "eastus.api.azureml.ms"
MFE_HOST = "cert-eastus.experiments.azureml.net"
REGISTRY_SUB, REGISTRY_RG = "00000000-0000-0000-0000-00000000feed", "registry-builtin-prod-eastus-01"
PROVIDER = r"/providers/Microsoft\.MachineLearningServices"
REG = (
    r"/mferp/managementfrontend/subscriptions/[^/]+/resourceGroups/[^/]+"
    + PROVIDER
    + r"/registries/(?P<registry>[^/]+)"
)
CLIENT_SECRET = "fake-secret"  # the one AZURE_CLIENT_SECRET the fake accepts
ACCOUNT_KEY = base64.b64encode(b"fake-account-key").decode()  # what listSecrets hands out
NO_DATA_ROLE = "no-data-role"  # a file in the state folder: the identity may not use Blob storage
WS = r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)" + PROVIDER + r"/workspaces/(?P<ws>[^/]+)"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def FakeAzure() -> RequestsTransport:
    """The transport azure-core uses for real (requests), with the network swapped for the fake."""
    session = requests.Session()
    session.mount("https://", FakeService(Path(os.environ["FAKE_AZURE_STATE"])))
    return RequestsTransport(session=session, session_owner=False)


class FakeService(HTTPAdapter):
    """A requests adapter that answers Azure's endpoints from a state folder instead of a socket."""

    def __init__(self, state: Path):
        super().__init__()
        self.state = state
        (self.state / "blobs").mkdir(parents=True, exist_ok=True)
        self.routes = [
            ("GET", TENANT_HOST, r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration", self.openid),
            ("POST", TENANT_HOST, r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token", self.token),
            ("GET", TENANT_HOST, r"/common/discovery/instance", self.instance_discovery),
            ("GET", ARM_HOST, WS + r"/models/(?P<name>[^/]+)", self.model_container),
            ("GET", ARM_HOST, WS + r"/models/(?P<name>[^/]+)/versions", self.model_versions),
            ("GET", ARM_HOST, WS + r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)", self.model_version),
            ("PUT", ARM_HOST, WS + r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)", self.put_model_version),
            ("GET", ARM_HOST, WS + r"/datastores", self.datastores),
            ("GET", ARM_HOST, WS + r"/datastores/(?P<name>[^/]+)", self.datastore),
            ("POST", ARM_HOST, WS + r"/datastores/(?P<name>[^/]+)/listSecrets", self.datastore_secrets),
            ("PUT", ARM_HOST, WS + r"/jobs/(?P<name>[^/]+)", self.put_job),
            ("GET", ARM_HOST, WS + r"/jobs/(?P<name>[^/]+)", self.get_job),
            ("POST", ARM_HOST, WS + r"/jobs/(?P<name>[^/]+)/cancel", self.cancel_job),
            (
                "GET",
                DISCOVERY_HOST,
                r"/registrymanagement/v1\.0/registries/(?P<registry>[^/]+)/discovery",
                self.discovery,
            ),
            ("GET", MFE_HOST, REG + r"/models/(?P<name>[^/]+)/versions", self.registry_versions),
            ("GET", MFE_HOST, REG + r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)", self.registry_version),
            ("POST", MFE_HOST, REG + r"/datarefs/(?P<name>[^/]+)/versions/(?P<version>[^/]+)", self.dataref),
            ("PUT", BLOB_HOST, r"/(?P<container>[^/]+)/(?P<blob>.+)", self.put_blob),
            ("GET", BLOB_HOST, r"/(?P<container>[^/]+)/?", self.list_blobs),
            ("GET", BLOB_HOST, r"/(?P<container>[^/]+)/(?P<blob>.+)", self.get_blob),
            ("HEAD", BLOB_HOST, r"/(?P<container>[^/]+)/(?P<blob>.+)", self.get_blob),
        ]

    def send(self, request, stream=False, **kwargs):
        url = urlparse(request.url)
        path = unquote(url.path)
        self._log(f"{request.method} {url.netloc}{path}")
        for method, host, pattern, handler in self.routes:
            on_host, match = re.fullmatch(host, url.netloc), re.fullmatch(pattern, path)
            if method == request.method and on_host and match:
                if host != TENANT_HOST and not _authorized(request, storage=host == BLOB_HOST):
                    return self._respond(request, 401, _arm_error("InvalidAuthenticationToken", "bad token"))
                if host == BLOB_HOST and self._no_data_role(request):
                    denied = _blob_error("AuthorizationPermissionMismatch", "This request is not authorized.")
                    return self._respond(request, 403, denied, {"x-ms-error-code": "AuthorizationPermissionMismatch"})
                args = on_host.groupdict() | match.groupdict()
                return self._respond(request, *handler(request, parse_qs(url.query), **args))
        return self._respond(request, 404, _arm_error("ResourceNotFound", f"{request.method} {path}: no such resource"))

    def _no_data_role(self, request) -> bool:
        """An Entra ID token on a storage account where the identity holds no data role
        (`NO_DATA_ROLE` file in the state folder): Blob storage answers 403."""
        bearer = request.headers.get("Authorization", "").startswith("Bearer ")
        return bearer and (self.state / NO_DATA_ROLE).exists()

    # -- plumbing --------------------------------------------------------------------------------
    def _log(self, line: str) -> None:
        with (self.state / "requests.log").open("a") as log:
            log.write(line + "\n")

    def _respond(self, request, status: int, body, headers: dict | None = None) -> requests.Response:
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json; charset=utf-8"
        body = body or b""
        headers.setdefault("Content-Length", str(len(body)))
        if request.method == "HEAD":  # headers only, as HTTP has it
            body = b""
        headers |= {"x-ms-request-id": str(uuid.uuid4()), "Date": formatdate(usegmt=True)}
        raw = HTTPResponse(
            body=io.BytesIO(body), headers=headers, status=status, preload_content=False, request_method=request.method
        )
        return self.build_response(request, raw)

    def _load(self, name: str) -> dict:
        path = self.state / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _save(self, name: str, doc: dict) -> None:
        tmp = self.state / f".{name}.{os.getpid()}.json"
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(self.state / f"{name}.json")  # atomic: the job runner writes while clients read

    # -- Entra ID (the client-credentials flow of EnvironmentCredential) ------------------------
    def openid(self, request, query, tenant):
        base = f"https://{TENANT_HOST}/{tenant}"
        return (
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "issuer": f"{base}/v2.0",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "tenant_region_scope": "EU",
            },
            {},
        )

    def instance_discovery(self, request, query):
        aliases = [TENANT_HOST, "login.windows.net", "login.microsoft.com", "sts.windows.net"]
        return (
            200,
            {
                "tenant_discovery_endpoint": f"https://{TENANT_HOST}/common/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [
                    {"preferred_network": TENANT_HOST, "preferred_cache": "login.windows.net", "aliases": aliases}
                ],
            },
            {},
        )

    def token(self, request, query, tenant):
        if parse_qs(_body(request).decode()).get("client_secret") != [CLIENT_SECRET]:
            return (
                401,
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being "
                    "sent in the request is the client secret value, not the client secret ID.",
                    "error_codes": [7000215],
                    "timestamp": _now(),
                },
                {},
            )
        scope = parse_qs(_body(request).decode()).get("scope", [""])[0]
        audience = "storage" if "storage.azure.com" in scope else "arm"
        return (
            200,
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": f"fake-token-{audience}-{uuid.uuid4().hex}",
            },
            {},
        )

    # -- Azure ML: models --------------------------------------------------------------------------
    def _ws_id(self, sub, rg, ws) -> str:
        return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}"

    def model_container(self, request, query, sub, rg, ws, name):
        versions = self._load("models").get(name)
        if not versions:
            return 404, _arm_error("UserError", f"Could not find asset with name {name}"), {}
        numbers = [int(v) for v in versions if v.isdigit()]
        return (
            200,
            {
                "id": f"{self._ws_id(sub, rg, ws)}/models/{name}",
                "name": name,
                "type": "Microsoft.MachineLearningServices/workspaces/models",
                "properties": {
                    "latestVersion": str(max(numbers)) if numbers else None,
                    "nextVersion": str(max(numbers, default=0) + 1),
                    "isArchived": False,
                    "tags": {},
                    "properties": {},
                },
            },
            {},
        )

    def model_versions(self, request, query, sub, rg, ws, name):
        return 200, {"value": _listing(self._load("models").get(name, {}), query)}, {}

    def model_version(self, request, query, sub, rg, ws, name, version):
        found = self._load("models").get(name, {}).get(version)
        if not found:
            return 404, _arm_error("UserError", f"Could not find asset with name {name} and version {version}"), {}
        return 200, found, {}

    def put_model_version(self, request, query, sub, rg, ws, name, version):
        models = self._load("models")
        if version in models.get(name, {}):
            return 409, _arm_error("UserError", f"Model {name}:{version} already exists"), {}
        body = json.loads(_body(request))
        # What the service fills in for fields a client left out.
        defaults = {"flavors": {}, "properties": {}, "tags": {}, "isAnonymous": False, "isArchived": False}
        body["properties"] = {**defaults, **body["properties"], "provisioningState": "Succeeded"}
        body["properties"]["stage"] = body["properties"].get("stage") or "Development"
        resource = _resource(f"{self._ws_id(sub, rg, ws)}/models/{name}/versions/{version}", body["properties"])
        models.setdefault(name, {})[version] = resource
        self._save("models", models)
        return 201, resource, {}

    # -- Azure ML: datastores ----------------------------------------------------------------------
    def datastore(self, request, query, sub, rg, ws, name):
        if name not in DATASTORES:
            return 404, _arm_error("UserError", f"datastore {name} not found"), {}
        return (
            200,
            {
                "id": f"{self._ws_id(sub, rg, ws)}/datastores/{name}",
                "name": name,
                "type": "Microsoft.MachineLearningServices/workspaces/datastores",
                "properties": {
                    "datastoreType": "AzureBlob",
                    "accountName": ACCOUNT,
                    "containerName": DATASTORES[name],
                    "endpoint": "core.windows.net",
                    "protocol": "https",
                    "isDefault": name == "workspaceblobstore",
                    "credentials": {"credentialsType": "AccountKey"},
                    "tags": {},
                },
            },
            {},
        )

    def datastores(self, request, query, sub, rg, ws):
        return 200, {"value": [self.datastore(request, query, sub, rg, ws, "workspaceblobstore")[1]]}, {}

    def datastore_secrets(self, request, query, sub, rg, ws, name):
        return 200, {"secretsType": "AccountKey", "key": ACCOUNT_KEY}, {}

    # -- Azure ML: command jobs, run on this machine by `python -m tests.fakes.azure run-job` ---------
    def put_job(self, request, query, sub, rg, ws, name):
        jobs = self._load("jobs")
        if name in jobs:
            return 409, _arm_error("UserError", f"job {name} already exists"), {}
        body = json.loads(_body(request))
        body["properties"] |= {"status": "Starting", "services": {}, "parameters": {}}
        resource = _resource(f"{self._ws_id(sub, rg, ws)}/jobs/{name}", body["properties"])
        jobs[name] = resource
        self._save("jobs", jobs)
        runner = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.azure", "run-job", str(self.state), name],
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.DEVNULL,
            stderr=(self.state / f"runner-{name}.err").open("w"),
            start_new_session=True,  # a remote job outlives the client that submitted it
        )
        (self.state / f"runner-{name}.pid").write_text(str(runner.pid))
        return 201, resource, {}

    def get_job(self, request, query, sub, rg, ws, name):
        found = self._load("jobs").get(name)
        return (200, found, {}) if found else (404, _arm_error("UserError", f"job {name} not found"), {})

    def cancel_job(self, request, query, sub, rg, ws, name):
        pid = self.state / f"runner-{name}.pid"
        if pid.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid.read_text()), signal.SIGTERM)
        self.set_status(name, "Canceled")
        return 200, b"", {}  # done at once: no operation to poll

    def set_status(self, name: str, status: str) -> None:
        jobs = self._load("jobs")
        if jobs[name]["properties"]["status"] not in ("Canceled",):
            jobs[name]["properties"]["status"] = status
            self._save("jobs", jobs)

    def run_job(self, name: str) -> None:
        """The compute: materialize the inputs, run the command with the job's environment
        variables (this interpreter stands in for the environment), log to the artifact store,
        and upload the output folder where the job said."""
        spec = self._load("jobs")[name]["properties"]
        work = Path(tempfile.mkdtemp(prefix=f"fake-job-{name}-"))
        command = spec["command"]
        for key, value in spec.get("inputs", {}).items():
            folder = work / "inputs" / key
            shutil.copytree(self._folder_of(value["uri"]), folder)
            command = command.replace(f"${{{{inputs.{key}}}}}", str(folder))
        out = work / "outputs" / "out"
        out.mkdir(parents=True)
        command = command.replace("${{outputs.out}}", str(out))
        logs = DATASTORES["workspaceartifactstore"]
        log = self._blob_path(ACCOUNT, logs, f"ExperimentRun/dcid.{name}/user_logs/std_log.txt")
        log.parent.mkdir(parents=True, exist_ok=True)
        path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # `python` is this interpreter
        env = {**os.environ, **spec.get("environmentVariables", {}), "PATH": path}
        self.set_status(name, "Running")
        with log.open("wb") as stream:
            rc = subprocess.run(["bash", "-c", command], stdout=stream, stderr=subprocess.STDOUT, env=env).returncode
        if rc == 0:
            target = self._folder_of(spec["outputs"]["out"]["uri"])
            shutil.copytree(out, target, dirs_exist_ok=True)
        self.set_status(name, "Completed" if rc == 0 else "Failed")

    def _folder_of(self, uri: str) -> Path:
        """azureml://[subscriptions/.../workspaces/<ws>/]datastores/<store>/paths/<prefix> in the blob store."""
        store, _, prefix = uri.split("/datastores/", 1)[1].partition("/paths/")
        return self._blob_path(ACCOUNT, DATASTORES[store], prefix.strip("/"))

    # -- Azure ML registries (discovery, model versions, SAS references to their storage) -----------
    def discovery(self, request, query, registry):
        if registry not in self._load("registry_models"):
            return 404, _arm_error("NotFound", f"registry {registry} not found"), {}
        return (
            200,
            {
                "registryName": registry,
                "primaryRegion": "eastus",
                "regions": ["eastus"],
                "primaryRegionResourceProviderUri": f"https://{MFE_HOST}/",
                "subscriptionId": REGISTRY_SUB,
                "resourceGroup": REGISTRY_RG,
            },
            {},
        )

    def registry_versions(self, request, query, registry, name):
        return 200, {"value": _listing(self._load("registry_models").get(registry, {}).get(name, {}), query)}, {}

    def registry_version(self, request, query, registry, name, version):
        found = self._load("registry_models").get(registry, {}).get(name, {}).get(version)
        if not found:
            return 404, _arm_error("UserError", f"Could not find asset with name {name} and version {version}"), {}
        return 200, found, {}

    def dataref(self, request, query, registry, name, version):
        uri = json.loads(_body(request))["blobUri"]
        return (
            200,
            {
                "blobReferenceForConsumption": {
                    "blobUri": uri,
                    "storageAccountArmId": f"/subscriptions/{REGISTRY_SUB}/storageAccounts/{REGISTRY_ACCOUNT}",
                    "credential": {"credentialType": "SAS", "sasUri": f"{uri}?sv=2021-08-06&sr=c&sp=rl&sig=fake-sas"},
                }
            },
            {},
        )

    # -- Blob storage ------------------------------------------------------------------------------
    def _blob_path(self, account: str, container: str, blob: str = "") -> Path:
        root = self.state / "blobs"
        path = (root / account / container / blob).resolve()
        assert path.is_relative_to(root)
        return path

    def put_blob(self, request, query, account, container, blob):
        data = _body(request)
        blocks = self.state / "blocks"
        if query.get("comp") == ["block"]:
            blocks.mkdir(exist_ok=True)
            key = hashlib.sha1(f"{account}/{container}/{blob}/{query['blockid'][0]}".encode()).hexdigest()
            (blocks / key).write_bytes(data)
            return 201, b"", {"Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode()}
        if query.get("comp") == ["blocklist"]:
            ids = [e.text for e in ElementTree.fromstring(data) if e.tag in ("Latest", "Uncommitted", "Committed")]
            keys = [hashlib.sha1(f"{account}/{container}/{blob}/{i}".encode()).hexdigest() for i in ids]
            data = b"".join((blocks / key).read_bytes() for key in keys)
        elif request.headers.get("x-ms-blob-type") != "BlockBlob":
            return 400, _blob_error("InvalidHeaderValue", "x-ms-blob-type"), {}
        path = self._blob_path(account, container, blob)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return 201, b"", {"ETag": _etag(data), "Last-Modified": formatdate(usegmt=True)}

    def list_blobs(self, request, query, account, container):
        prefix = query.get("prefix", [""])[0]
        root = self._blob_path(account, container)
        items = []
        found = {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}
        found |= {name: len(data) for name, data in self._hostile(account, container).items()}
        for name, size in found.items():
            if name.startswith(prefix):
                items.append(
                    f"<Blob><Name>{escape(name)}</Name><Properties><Content-Length>{size}</Content-Length>"
                    "<BlobType>BlockBlob</BlobType><Content-Type>application/octet-stream</Content-Type></Properties></Blob>"
                )
        xml = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<EnumerationResults ServiceEndpoint="https://{account}.blob.core.windows.net/" '
            f'ContainerName="{container}">'
            f"<Prefix>{prefix}</Prefix><Blobs>{''.join(items)}</Blobs><NextMarker /></EnumerationResults>"
        )
        return 200, xml.encode(), {"Content-Type": "application/xml"}

    def _hostile(self, account: str, container: str) -> dict[str, bytes]:
        """Blobs whose names no file system path holds (`..` segments, a leading `/`): Blob storage
        accepts such names, so a container a stranger can write to may list them."""
        hostile = self.state / "hostile_blobs.json"
        found = json.loads(hostile.read_text()) if hostile.exists() else {}
        return {name: data.encode() for name, data in found.get(f"{account}/{container}", {}).items()}

    def get_blob(self, request, query, account, container, blob):
        hostile = self._hostile(account, container)
        if blob in hostile:
            data = hostile[blob]
        elif not (path := self._blob_path(account, container, blob)).is_file():
            missing = _blob_error("BlobNotFound", "The specified blob does not exist.")
            return 404, missing, {"x-ms-error-code": "BlobNotFound"}
        else:
            data = path.read_bytes()
        headers = {
            "x-ms-blob-type": "BlockBlob",
            "ETag": _etag(data),
            "Last-Modified": formatdate(usegmt=True),
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        wanted = request.headers.get("x-ms-range") or request.headers.get("Range")
        if wanted:
            start, end = (int(x) for x in re.fullmatch(r"bytes=(\d+)-(\d+)", wanted).groups())
            part = data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{start + len(part) - 1}/{len(data)}"
            return 206, part, headers
        return 200, data, headers


def add_model(
    state: Path,
    folder: Path,
    name: str,
    version: str,
    registry: str | None = None,
    workspace: tuple[str, str, str] | None = None,
) -> str:
    """Put a model (its files in blob storage, its version record) into the fake service, as if
    someone had registered it; returns its asset id."""
    fake = FakeService(state)
    props = {"modelType": "custom_model", "flavors": {}, "properties": {}, "tags": {}, "isArchived": False}
    if registry:
        account, container, prefix = REGISTRY_ACCOUNT, REGISTRY_CONTAINER, f"models/{name}/{version}"
        props["modelUri"] = f"https://{account}.blob.core.windows.net/{container}/{prefix}"
        store, asset = "registry_models", f"azureml://registries/{registry}/models/{name}/versions/{version}"
        resource = {**_resource(asset, props, "someone"), "name": version}
        models = fake._load(store)
        models.setdefault(registry, {}).setdefault(name, {})[version] = resource
    else:
        sub, rg, ws = workspace
        account, container, prefix = ACCOUNT, CONTAINER, f"LocalUpload/{name}/{version}"
        ws_id = fake._ws_id(sub, rg, ws)
        props["modelUri"] = (
            f"azureml://subscriptions/{sub}/resourcegroups/{rg}/workspaces/{ws}/datastores/workspaceblobstore/paths/{prefix}"
        )
        store, asset = "models", f"azureml:{name}:{version}"
        resource = _resource(f"{ws_id}/models/{name}/versions/{version}", props, "someone")
        models = fake._load(store)
        models.setdefault(name, {})[version] = resource
    fake._save(store, models)
    for path in folder.rglob("*"):
        if path.is_file():
            target = fake._blob_path(account, container, f"{prefix}/{path.relative_to(folder).as_posix()}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return asset


def add_hostile_blob(state: Path, asset_folder: str, name: str, data: str) -> None:
    """List a blob named `<the registry model's folder>/<name>` (e.g. `../../x`) beside its files."""
    path = state / "hostile_blobs.json"
    found = json.loads(path.read_text()) if path.exists() else {}
    found.setdefault(f"{REGISTRY_ACCOUNT}/{REGISTRY_CONTAINER}", {})[f"{asset_folder}/{name}"] = data
    path.write_text(json.dumps(found))


def _resource(arm_id: str, properties: dict, created_by: str = "lab-ci") -> dict:
    """An ARM resource as Azure ML returns it: id, name (its last segment), type, properties, systemData."""
    parts = arm_id.split("/providers/Microsoft.MachineLearningServices/")[-1].split("/")
    return {
        "id": arm_id,
        "name": parts[-1],
        "type": "Microsoft.MachineLearningServices/" + "/".join(parts[0::2]),
        "properties": properties,
        "systemData": {"createdAt": _now(), "createdBy": created_by, "createdByType": "Application"},
    }


def _listing(versions: dict, query: dict) -> list[dict]:
    """Versions as the service lists them: $orderBy=createdtime desc and $top honoured."""
    found = list(versions.values())
    if query.get("$orderBy", [""])[0].lower().startswith("createdtime desc"):
        found.sort(key=lambda v: (v["systemData"]["createdAt"], v["name"].zfill(12)), reverse=True)
    return found[: int(query.get("$top", [len(found) or 1])[0])]


def _authorized(request, storage: bool) -> bool:
    """A token for this service's audience (Blob storage or ARM), an account key's signature or a SAS."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer fake-token-"):
        return auth.startswith(f"Bearer fake-token-{'storage' if storage else 'arm'}-")
    return storage and (auth.startswith("SharedKey ") or "sig=" in request.url)


def _body(request) -> bytes:
    body = request.body
    if hasattr(body, "read"):
        return body.read()
    if body is None or isinstance(body, bytes):
        return body or b""
    if isinstance(body, str):
        return body.encode()
    return b"".join(body)  # a generator of chunks


def _arm_error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "details": [], "additionalInfo": []}}


def _blob_error(code: str, message: str) -> bytes:
    xml = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return xml.encode()


def _etag(data: bytes) -> str:
    return f'"0x{hashlib.md5(data).hexdigest()[:16].upper()}"'


if __name__ == "__main__":  # python -m tests.fakes.azure run-job <state> <name>
    FakeService(Path(sys.argv[2])).run_job(sys.argv[3])
