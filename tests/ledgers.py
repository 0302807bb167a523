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

    def __str__(self) -> str:
        return self.kind
