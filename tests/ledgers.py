"""Ledgers under test, described by a picklable spec so other processes can open the same one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from handlers.ports import Ledger


@dataclass(frozen=True)
class LedgerSpec:
    """``kind`` 'sqlite' (``target`` is the file) or 'table' (``target`` is a connection string)."""

    kind: str
    target: str
    prefix: str = "retrain"

    def open(self) -> Ledger:
        if self.kind == "sqlite":
            from function_app.adapters.sqlite_ledger import SqliteLedger

            return SqliteLedger(self.target)
        from function_app.adapters.table_ledger import TableLedger

        ledger: Ledger = TableLedger.from_connection_string(self.target, self.prefix)
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
