"""The Table ledger on Azurite, for `make bench`: the same measurement as SQLite's, beside it.

Azurite is started here on free ports of 127.0.0.1 (tests/azurite.py, which installs it from npm if
needed) and stopped at the end. Azurite is a single Node.js process on this machine, not the Azure
Table service: the figure is what the code path costs with a real HTTP round trip per ledger call,
a lower bound for a laptop, not a prediction for Azure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def table_results(n: int, throughput: Callable[[Callable[[], Any], int], dict[str, float]]) -> dict[str, Any]:
    from function_app.adapters.table_ledger import TableLedger
    from tests.azurite import Azurite

    azurite = Azurite().start()
    try:
        return {"table": throughput(lambda: TableLedger.from_connection_string(azurite.connection_string, "bench"), n)}
    finally:
        azurite.close()
