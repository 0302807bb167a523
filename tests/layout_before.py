"""A worker of the code before the partition per model (605d401, the code scripts/ledger_before.py
runs from git), as far as a model's slot goes: that code kept a model's guard state in the body of
its ``models`` row and changed it only as below (``git show 605d401:function_app/adapters/table_models.py``,
``_read_model`` and ``update_model``; the guess of the row it last wrote left out, which only saves
it a read). It is the overlap a deployment without a stop makes: such a worker must never take a
slot beside this code (docs/ledger.md, "Workers of both layouts at once")."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from function_app.adapters.table_entities import etag_of, get_body, put_body, safe_key
from handlers.records import ModelState

T = TypeVar("T")


class WorkerBefore:
    """The code before's model reads and writes, on the ``models`` table of ``prefix``."""

    def __init__(self, connection: str, prefix: str) -> None:
        self.models: TableClient = TableServiceClient.from_connection_string(connection).get_table_client(
            prefix + "models"
        )

    def _read_model(self, model: str) -> tuple[ModelState, Any]:
        try:
            entity = self.models.get_entity(safe_key(model), "")
        except ResourceNotFoundError:
            return ModelState(model=model), None
        return ModelState.from_dict(json.loads(get_body(entity)), etag=etag_of(entity)), entity

    def update_model(self, model: str, change: Callable[[ModelState], tuple[ModelState | None, T]]) -> T:
        """Read the row (none: a new model), apply ``change``, write on the ETag read (none: an insert);
        on 412 or 409 read and apply again. A row it cannot read as a state raises, as it did there."""
        for _ in range(64):
            state, entity = self._read_model(model)
            new, result = change(state)
            if new is None:
                return result
            row = put_body({"PartitionKey": safe_key(model), "RowKey": ""}, json.dumps(new.to_dict(), sort_keys=True))
            try:
                if entity is None:
                    self.models.create_entity(row)
                else:
                    self.models.update_entity(
                        row,
                        mode=UpdateMode.REPLACE,
                        etag=etag_of(entity),
                        match_condition=MatchConditions.IfNotModified,
                    )
            except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError):
                continue
            return result
        raise AssertionError(f"model {model}: 64 concurrent writers in a row")
