"""The fake workspace's datastores and the blobs in their storage account: ``GET .../datastores/{name}``
(the Azure ML control plane, routed here by :class:`tests.fake_arm.FakeArm`) and ``GET
https://<account>.blob.core.windows.net/<container>/<blob>`` (Azure Storage's Get Blob).

What it checks, as Azure documents it:

- a datastore is answered without its secrets (``credentials`` keeps its type only: Azure ML answers
  them through ``listSecrets``, which the service never calls);
- Get Blob ("Authorize access to blobs using Microsoft Entra ID"): a bearer token for
  ``https://storage.azure.com``, from an identity holding the data action
  ``Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read`` at the container (its roles read
  from infra/, tests/rbac.py; Storage Blob Data Reader grants it); refused: 403
  ``AuthorizationPermissionMismatch`` with Azure Storage's XML error body and ``x-ms-error-code``; a missing
  blob: 404 ``BlobNotFound``; a range (``x-ms-range``): 206 with ``Content-Range``, 416 ``InvalidRange``
  past the end of the blob (Get Blob, "Specify the range header").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from tests.fake_http import Answer, Refusal, Unexpected, token_audience, token_claims

if TYPE_CHECKING:
    from tests.fake_arm import FakeArm
    from tests.fake_arm_common import Call

BLOB_READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
AUDIENCE = "https://storage.azure.com"
HOST_SUFFIX = ".blob.core.windows.net"
CONTAINER = "azureml-blobstore-5b1f3b5e"  # the workspace's default blob container (workspaceblobstore)


def _storage_error(status: int, code: str, message: str) -> Refusal:
    body = (
        f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}\n'
        "RequestId:00000000-0000-0000-0000-000000000000\nTime:2026-12-06T10:00:00.0000000Z</Message></Error>"
    ).encode()
    headers = {"x-ms-error-code": code, "Content-Type": "application/xml", "x-ms-version": "2025-01-05"}
    return Refusal(status, code, message, headers=headers, body=body)


class FakeDatastores:
    """The workspace's datastores (``workspaceblobstore`` in ``account``, the storage account of the
    workspace's resource group) and the blobs of their containers."""

    def __init__(self, arm: FakeArm, account: str) -> None:
        self.arm, self.account = arm, account
        self.blobs: dict[tuple[str, str], bytes] = {}  # (container, blob name) -> its bytes
        self.reads: list[tuple[str, str]] = []

    def put(self, path: str, content: bytes, *, container: str = CONTAINER) -> str:
        """A file in the default datastore; answers its ``azureml://datastores/...`` URI."""
        self.blobs[(container, path)] = content
        return f"azureml://datastores/workspaceblobstore/paths/{path}"

    # ------------------------------------------------------------------ the control plane

    def datastore(self, call: Call, name: str) -> Answer:
        if name != "workspaceblobstore":
            raise Refusal(404, "UserError", f"Could not find datastore {name} in workspace {self.arm.workspace}")
        return (
            200,
            {},
            {
                "id": self.arm.arm_id("datastores", name),
                "name": name,
                "type": "Microsoft.MachineLearningServices/workspaces/datastores",
                "properties": {
                    "datastoreType": "AzureBlob",
                    "accountName": self.account,
                    "containerName": CONTAINER,
                    "endpoint": "core.windows.net",
                    "protocol": "https",
                    "credentials": {"credentialsType": "AccountKey"},
                    "isDefault": True,
                    "serviceDataAccessAuthIdentity": "WorkspaceSystemAssignedIdentity",
                    "properties": {},
                    "tags": {},
                },
            },
        )

    # ------------------------------------------------------------------ the data plane

    def handles(self, host: str) -> bool:
        return host.endswith(HOST_SUFFIX)

    def answer(self, call: Call) -> Answer:
        url = urlparse(call.url)
        if url.hostname != f"{self.account}{HOST_SUFFIX}":
            raise Unexpected(f"no storage account answers at {url.hostname}")
        if call.method != "GET":
            raise Unexpected(f"{call.method} on a blob: the service only reads")
        container, _, blob = call.path.lstrip("/").partition("/")
        self._authorize(call, container)
        content = self.blobs.get((container, blob))
        if content is None:
            raise _storage_error(404, "BlobNotFound", "The specified blob does not exist.")
        self.reads.append((container, blob))
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": '"0x8DD15F00000000"',
            "Last-Modified": "Fri, 20 Nov 2026 09:00:00 GMT",
            "x-ms-blob-type": "BlockBlob",
            "x-ms-version": "2025-01-05",
            "x-ms-creation-time": "Fri, 20 Nov 2026 09:00:00 GMT",
        }
        wanted = call.headers.get("x-ms-range") or call.headers.get("Range")
        if not wanted:
            return 200, headers, content
        first, _, last = wanted.removeprefix("bytes=").partition("-")
        start = int(first)
        if start >= len(content):
            raise _storage_error(
                416, "InvalidRange", "The range specified is invalid for the current size of the resource."
            )
        end = min(len(content) - 1, int(last)) if last else len(content) - 1
        headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
        return 206, headers, content[start : end + 1]

    def _authorize(self, call: Call, container: str) -> None:
        header = call.headers.get("Authorization")
        if not header or token_audience(header) != AUDIENCE:
            raise _storage_error(
                401, "InvalidAuthenticationInfo", "Authentication information is not given in the correct format."
            )
        oid = str(token_claims(header).get("oid"))
        principal = self.arm.principal if oid == self.arm.principal.oid else self.arm.others.get(oid)
        scope = (
            f"/subscriptions/{self.arm.subscription}/resourceGroups/{self.arm.resource_group}/providers/"
            f"Microsoft.Storage/storageAccounts/{self.account}/blobServices/default/containers/{container}"
        )
        if principal is None or not principal.allows(BLOB_READ, scope, data=True):
            self.arm.refused.append((BLOB_READ, scope))
            raise _storage_error(
                403,
                "AuthorizationPermissionMismatch",
                "This request is not authorized to perform this operation using this permission.",
            )


def blob_body(content: Any) -> bytes:
    """JSON lines of ``content`` (a list of requests)."""
    import json

    return b"".join(json.dumps(item).encode() + b"\n" for item in content)
