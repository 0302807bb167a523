"""The Table ledger's models: each model's guard state in one entity, changed only by a write
conditional on the ETag read (or an insert, for a model never seen); on 412 or 409 the change is
re-read and applied again."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from function_app.adapters.azure_errors import translated
from function_app.adapters.table_entities import TableParts, etag_of, get_body, put_body, safe_key
from handlers.errors import TransientError
from handlers.records import ModelState

T = TypeVar("T")


class TableModels(TableParts):
    """The ``models`` table: PartitionKey the model name (escaped), RowKey ``""``, ``body`` the state."""

    def _read_model(self, model: str) -> tuple[ModelState, Any]:
        try:
            entity = self.models.get_entity(safe_key(model), "")
        except ResourceNotFoundError:
            return ModelState(model=model), None
        return ModelState.from_dict(json.loads(get_body(entity)), etag=etag_of(entity)), entity

    def get_model(self, model: str) -> ModelState:
        with translated(f"reading model {model}"):
            return self._read_model(model)[0]

    def list_models(self) -> list[ModelState]:
        with translated("listing models"):
            entities = list(self.models.list_entities())
        states = [ModelState.from_dict(json.loads(get_body(e)), etag=etag_of(e)) for e in entities]
        return sorted(states, key=lambda s: s.model)

    def update_model(
        self, model: str, change: Callable[[ModelState], tuple[ModelState | None, T]], attempts: int = 64
    ) -> T:
        """Optimistic concurrency: apply ``change`` to the state read, write only if its ETag still
        matches (or, for a new model, only if nobody inserted it first); otherwise read and apply again.
        The first try applies it to the row as this worker last read or wrote it, without a read: the
        write is conditional on that row's ETag all the same, and a change that would write nothing
        is applied again to the row read (nothing is decided on what may be stale)."""
        with translated(f"updating model {model}"):
            known = self._rows.pop(model, None)
            for attempt in range(attempts):
                if known is not None:  # a guess, written only if the row is still what it was
                    body, etag = known
                    known = None
                    state: ModelState = ModelState.from_dict(json.loads(body), etag=etag)
                    guess: str | None = etag
                else:
                    state, entity = self._read_model(model)
                    guess = None
                    etag = etag_of(entity) if entity is not None else ""
                    if entity is not None:
                        self._rows[model] = (get_body(entity), etag)
                new, result = change(state)
                if new is None:
                    if guess is not None:
                        continue  # decided on the guess: read the row and decide on that
                    return result
                body = json.dumps(new.to_dict(), sort_keys=True)
                row = put_body({"PartitionKey": safe_key(model), "RowKey": ""}, body)
                try:
                    if not etag:
                        written = self.models.create_entity(row)
                    else:
                        written = self.models.update_entity(
                            row,
                            mode=UpdateMode.REPLACE,
                            etag=etag,
                            match_condition=MatchConditions.IfNotModified,
                        )
                except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError):
                    self._rows.pop(model, None)
                    if guess is None:
                        self.sleep(self.rng.uniform(0, min(0.05, 0.002 * 2**attempt)))
                else:
                    if written and written.get("etag"):
                        self._rows[model] = (body, str(written["etag"]))
                    return result
        raise TransientError(f"model {model}: {attempts} concurrent writers in a row; retry later")
