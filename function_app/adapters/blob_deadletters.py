"""Dead-letter blobs in Azure Blob Storage (the container Event Grid dead-letters into)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from function_app.adapters.azure_errors import translated
from handlers import jsonin
from handlers.errors import InvalidInput

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import ContainerClient

    from function_app.settings import Settings

REPLAYED = "retrain_replayed"


class BlobDeadLetterStore:
    def __init__(self, container: ContainerClient, prefix: str = "") -> None:
        self.container = container
        self.prefix = prefix

    @classmethod
    def from_settings(cls, settings: Settings, credential: TokenCredential, prefix: str = "") -> BlobDeadLetterStore:
        from azure.storage.blob import ContainerClient

        name = settings.deadletter_container
        if settings.blob_connection:
            return cls(ContainerClient.from_connection_string(settings.blob_connection, name), prefix)
        if not settings.blob_account_url:
            raise ValueError(
                "set RETRAIN_BLOB_ACCOUNT_URL (managed identity) or RETRAIN_BLOB_CONNECTION to replay dead letters"
            )
        return cls(ContainerClient(settings.blob_account_url, name, credential=credential), prefix)

    def pending(self) -> Iterator[str]:
        with translated(f"listing dead letters in {self.container.container_name}"):
            names = [
                b.name
                for b in self.container.list_blobs(name_starts_with=self.prefix or None, include=["metadata"])
                if b.name.endswith(".json") and not (b.metadata or {}).get(REPLAYED)
            ]
        yield from sorted(names)

    def read(self, name: str) -> bytes:
        """The blob's content; InvalidInput, without downloading it, when it is larger than any body the
        service reads (:data:`handlers.jsonin.MAX_BYTES`; Event Grid dead-letters at most 1 MB a batch)."""
        with translated(f"reading dead-letter blob {name}"):
            blob = self.container.get_blob_client(name)
            size = int(blob.get_blob_properties().size or 0)
            if size > jsonin.MAX_BYTES:
                raise InvalidInput(
                    f"blob of {size} bytes is larger than {jsonin.MAX_BYTES} bytes, so not a dead-letter batch "
                    "Event Grid writes (at most 1 MB); not downloaded, look at it by hand"
                )
            return bytes(blob.download_blob().readall())

    def mark_replayed(self, name: str, summary: str) -> None:
        with translated(f"marking dead-letter blob {name}"):
            blob = self.container.get_blob_client(name)
            metadata = dict(blob.get_blob_properties().metadata or {})
            metadata[REPLAYED] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            metadata["retrain_outcome"] = summary
            blob.set_blob_metadata(metadata)
