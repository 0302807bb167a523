"""Ledgers under test, described by a picklable spec so other processes can open the same one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.core.pipeline import PipelineRequest

    from function_app.adapters.table_ledger import TableLedger
    from handlers.ports import Ledger
    from tests.azurite import Azurite


@dataclass(frozen=True)
class LedgerSpec:
    """``kind`` 'sqlite' (``target`` is the file) or 'table' (``target`` is a connection string)."""

    kind: str
    target: str
    prefix: str = "retrain"

    def open(self, monotonic: Callable[[], float] = time.monotonic) -> Ledger:
        """The ledger; ``monotonic``: the worker's own clock, on which the Table ledger tells how long it
        has held a claim (SQLite's writes read what they replace, in one transaction, whatever the time)."""
        if self.kind == "sqlite":
            from function_app.adapters.sqlite_ledger import SqliteLedger

            return SqliteLedger(self.target)
        from function_app.adapters.table_ledger import TableLedger

        ledger: Ledger = TableLedger.from_connection_string(self.target, self.prefix, monotonic=monotonic)
        return ledger

    def settings(self) -> dict[str, str]:
        """The app's settings that put it on this ledger."""
        if self.kind == "sqlite":
            return {"RETRAIN_LEDGER": "sqlite", "RETRAIN_SQLITE_PATH": self.target}
        return {
            "RETRAIN_LEDGER": "table",
            "RETRAIN_TABLES_CONNECTION": self.target,
            "RETRAIN_TABLE_PREFIX": self.prefix,
        }

    def __str__(self) -> str:
        return self.kind


def counted_ledger(azurite: Azurite, prefix: str | None = None) -> tuple[TableLedger, list[str]]:
    """A Table ledger whose every HTTP request is noted as 'METHOD path' (``prefix``: another
    worker's ledger, the same tables)."""
    import uuid

    from azure.data.tables import TableServiceClient

    from function_app.adapters.table_entities import client_options
    from function_app.adapters.table_ledger import TableLedger

    seen: list[str] = []

    def note(request: PipelineRequest) -> None:  # type: ignore[type-arg]
        http = request.http_request
        seen.append(f"{http.method} {http.url.split('?')[0].rsplit('/', 1)[-1]}")

    service = TableServiceClient.from_connection_string(
        azurite.connection_string, **client_options(raw_request_hook=note)
    )
    return TableLedger(service, prefix or "t" + uuid.uuid4().hex[:12]), seen


def point(ledger: TableLedger, pk: str, decision_id: str) -> str:
    """What :func:`counted_ledger` notes for a point read of ``decision_id``'s record in partition ``pk``."""
    return f"GET {ledger.names['decisions']}(PartitionKey='{pk.replace(':', '%3A')}',RowKey='r%3A{decision_id}')"
