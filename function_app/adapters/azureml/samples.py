"""The smoke test's sample requests kept in a data asset (``deploy.rollout.smoke.requests: {data:
azureml:name:version}``): the asset read through azure-ai-ml, its file from the datastore's storage.

The file's bytes are read the way azure-ai-ml reads a datastore's files
(``azure.ai.ml._artifacts._artifact_utilities.get_datastore_info``): the asset's ``path``
(``azureml://datastores/<datastore>/paths/<file>``, or the same under the workspace's full id) names
the datastore; ``datastores.get`` (no secrets) gives its storage account, container and endpoint;
the blob is downloaded with azure-storage-blob. Where the SDK would first ask the datastore for its key
or a SAS token (``datastores/listsecrets/action``, which the service never holds:
function_app/adapters/permissions.py, NEVER_GRANTED), the service reads with its own Microsoft Entra
identity, as the SDK does for an identity-based datastore: it needs Storage Blob Data Reader on the
datastore's storage account (infra/modules/workspace-access.bicep, ``workspaceStorageAccountName``).

At most :data:`MAX_BYTES` are read; the requests are never logged.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from handlers.errors import PermanentError
from handlers.rollout_rules import MAX_SMOKE_REQUEST_BYTES, MAX_SMOKE_REQUESTS

if TYPE_CHECKING:
    from function_app.adapters.azureml.client import AzureMLClient
    from handlers.rollout_rules import SmokeData

# The first lines are read: up to the most requests a smoke test sends, each at its largest, and a line break.
MAX_BYTES = MAX_SMOKE_REQUESTS * (MAX_SMOKE_REQUEST_BYTES + 1)
_PATH = re.compile(
    r"^azureml://(?:subscriptions/[^/]+/resource[gG]roups/[^/]+/(?:providers/Microsoft\.MachineLearningServices/)?"
    r"workspaces/[^/]+/)?datastores/([^/]+)/paths/(.+)$"
)
# The storage endpoints of Azure's clouds: the only hosts the service's storage token is sent to.
STORAGE_ENDPOINTS = ("core.windows.net", "core.usgovcloudapi.net", "core.chinacloudapi.cn")
BLOB_READER = "Storage Blob Data Reader"


class DataSamples:
    """Reads the sample requests of a data asset (the Scoring port's ``samples``)."""

    def __init__(self, client: AzureMLClient) -> None:
        self.client = client

    def samples(self, data: SmokeData) -> list[Any]:
        """The first ``data.count`` requests of ``data``'s file (JSON lines; blank lines skipped).
        Raises PermanentError naming the asset and the fix when they cannot be read, TransientError
        when not now."""
        what = f"data asset {data.name}:{data.version}"
        budget = self.client.retry.budget()
        asset = self.client.call(
            budget,
            what,
            lambda: self.client.ml.data.get(data.name, version=data.version),
            "register it (az ml data create --type uri_file) or fix deploy.rollout.smoke.requests.data",
        )
        kind = str(getattr(asset, "type", "") or "")
        if kind != "uri_file":
            raise PermanentError(
                f"{what} is a {kind or 'data asset of no type'}; the smoke requests are read from a uri_file "
                "asset (one JSON request a line): register the file as uri_file"
            )
        path = str(getattr(asset, "path", "") or "")
        found = _PATH.match(path)
        if found is None:
            raise PermanentError(
                f"{what} is at {path[:200]!r}, not in a workspace datastore; register the file in one "
                "(azureml://datastores/<name>/paths/<file>)"
            )
        name, blob = found.group(1), found.group(2)
        store = self.client.call(budget, f"datastore {name} of {what}", lambda: self.client.ml.datastores.get(name))
        return _lines(what, self._read(what, store, blob), data.count)

    def _read(self, what: str, store: Any, blob: str) -> bytes:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        from azure.storage.blob import BlobClient

        kind = str(getattr(store.type, "value", store.type))  # azure-ai-ml's DatastoreType: "AzureBlob"
        if kind != "AzureBlob":
            raise PermanentError(
                f"{what} is in datastore {store.name} of type {kind}; the service reads smoke requests from "
                "an Azure Blob datastore: register the file in one (the workspace's workspaceblobstore)"
            )
        endpoint = str(getattr(store, "endpoint", "") or "core.windows.net")
        if endpoint not in STORAGE_ENDPOINTS or getattr(store, "protocol", "https") != "https":
            raise PermanentError(
                f"{what}'s datastore {store.name} is on {endpoint!r}; the service sends its token only to Azure "
                f"Storage over https ({', '.join(STORAGE_ENDPOINTS)})"
            )
        credential = self.client.credential
        if credential is None:
            raise PermanentError("the Azure ML backend has no credential to read data assets with")
        client = BlobClient(
            f"https://{store.account_name}.blob.{endpoint}",
            container_name=str(store.container_name),
            blob_name=blob,
            credential=credential,
            **self.client.http_options,
        )
        with self.client.translating(f"reading the file of {what}"):
            try:
                return bytes(client.download_blob(offset=0, length=MAX_BYTES).readall())
            except ResourceNotFoundError:
                raise PermanentError(
                    f"{what}'s file {blob!r} is not in container {store.container_name} of storage account "
                    f"{store.account_name}; upload it again or register the asset anew"
                ) from None
            except HttpResponseError as exc:
                if exc.status_code != 403:
                    raise
                raise PermanentError(
                    f"storage account {store.account_name} refused to let the service's identity read {what}'s file "
                    f"(403 {getattr(exc, 'error_code', None) or ''}); grant it {BLOB_READER} on that account: set "
                    "workspaceStorageAccountName in infra (infra/modules/workspace-access.bicep) and run azd provision"
                ) from None


def _lines(what: str, raw: bytes, count: int) -> list[Any]:
    """The first ``count`` JSON requests of ``raw`` (a prefix of the file: its last line may be cut)."""
    text = raw.decode("utf-8", errors="replace")
    lines = text.splitlines()
    cut = len(raw) >= MAX_BYTES and not text.endswith("\n")
    out: list[Any] = []
    for number, line in enumerate(lines, start=1):
        if len(out) == count:
            break
        if not line.strip():
            continue
        if cut and number == len(lines):
            raise PermanentError(
                f"{what}: line {number} is longer than a sample request may be ({MAX_SMOKE_REQUEST_BYTES} bytes as "
                "JSON); use smaller sample requests"
            )
        if len(line.encode()) > MAX_SMOKE_REQUEST_BYTES:
            raise PermanentError(
                f"{what}: line {number} is {len(line.encode())} bytes, more than {MAX_SMOKE_REQUEST_BYTES}; use a "
                "smaller sample request"
            )
        try:
            out.append(json.loads(line))
        except ValueError:
            raise PermanentError(
                f"{what}: line {number} is not JSON; write one JSON request a line (JSON lines)"
            ) from None
    if not out:
        raise PermanentError(f"{what} holds no request; write one JSON request a line (JSON lines)")
    return out
