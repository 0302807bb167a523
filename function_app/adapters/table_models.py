"""The Table ledger's models: each model's guard state in its state row (RowKey ``state``) in the
model's partition of the decisions table, beside its decisions and their notifications, changed
only by a write conditional on the ETag read (or an insert, for a model never written in this
layout); on 412 or 409 the change is re-read and applied again.

The ``models`` table is the directory of models: one row per model (PartitionKey the model), which
lists them in one request. A worker that serves lists its policy's models there as it starts
(:meth:`TableModels.adopt`: one listing, an insert for each model without a row), so a model's first
event inserts none; a model outside the policy, or one whose adoption failed, gets its row on its
first write, as before. A row of this layout has no body and nothing ever gives it one, so a worker
that knows a model's row is one finds no state row only on a model never written: a new state, with
no other read. Rows written by the layout before (their ``body`` the model's state) are where a
model's state is read from until its state row is first written: the first write copies it (an
insert, conditional on no other worker having copied it first), after rewriting the row as
``{"moved": <state>}`` so that a worker of the code before can no longer act on it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from function_app.adapters.azure_errors import translated
from function_app.adapters.table_entities import (
    NOTE,
    STATE,
    TableParts,
    etag_of,
    get_body,
    model_key,
    model_partition,
    prefix_range,
    put_body,
)
from handlers.errors import TransientError
from handlers.records import ModelState

T = TypeVar("T")

SURVEY_FRESH = 30.0  # seconds a reconciler's survey of the outbox (list_models) serves its drain


class TableModels(TableParts):
    """State rows (``decisions`` table, PartitionKey ``m:<model>``, RowKey ``state``) and the
    directory (``models`` table, PartitionKey the model, RowKey ``""``)."""

    def _state_op(self, model: str, state: ModelState, etag: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The operation that writes ``state``: an insert when ``etag`` is empty (no state row yet),
        else a replace conditional on it."""
        body = json.dumps(state.to_dict(), sort_keys=True)
        row = put_body({"PartitionKey": model_partition(model), "RowKey": STATE}, body)
        if not etag:
            return "create", row, {}
        return (
            "update",
            row,
            {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified},
        )

    def _state_of(self, model: str, entity: Any) -> tuple[ModelState, str]:
        """The state a state row holds (and its ETag); with no row, the state the directory's row of
        the layout before holds (ETag ``""``: the first write inserts the state row), or a new one:
        without reading the directory when this worker knows the model's row there has no body."""
        if entity is not None:  # a model with a state row is in the directory (written first)
            self._listed.add(model)
            return ModelState.from_dict(json.loads(get_body(entity)), etag=etag_of(entity)), etag_of(entity)
        if model in self._native:  # this layout's row, which no worker of either layout rewrites
            return ModelState(model=model), ""
        return self._directory_state(model), ""

    def _directory_state(self, model: str) -> ModelState:
        """The model's state as the layout before kept it in its directory row (a new state when none);
        the directory row is written first when the model has none (the reconciler lists models by it).

        A state of the layout before is taken from its workers first: the row's body is rewritten as
        ``{"moved": <state>}`` on the ETag read (read again if one of them changed it meanwhile), which
        the code before cannot read as a model's state, so a worker of it still running (a deployment
        that overlaps) fails on this model and acts on nothing, instead of reserving on a state this
        layout no longer writes. The state stays in the body until this layout's state row holds it."""
        for _ in range(64):
            try:
                old = self.models.get_entity(model_key(model), "")
            except ResourceNotFoundError:
                self._listed.discard(model)
                return ModelState(model=model)
            self._listed.add(model)
            data = json.loads(get_body(old) or "{}")
            if "model" not in data:  # this layout's row: taken over already (or never the layout before's)
                return ModelState.from_dict(data["moved"]) if "moved" in data else ModelState(model=model)
            row = put_body(
                {"PartitionKey": model_key(model), "RowKey": "", "model": model}, json.dumps({"moved": data})
            )
            try:
                self.models.update_entity(
                    row, mode=UpdateMode.REPLACE, etag=etag_of(old), match_condition=MatchConditions.IfNotModified
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                continue  # a worker of the code before changed it meanwhile: read again
            return ModelState.from_dict(data)
        raise TransientError(f"model {model}: its row of the layout before keeps changing; retry later")

    def adopt(self, models: Iterable[str]) -> None:
        """List ``models`` (the policy's, as a worker that serves starts) in the directory: one listing
        of it (a request per 1,000 rows), then an insert of the row of each model that has none (once
        in the ledger's life), so that no model's first event inserts it. What the listing says of
        each row is kept: one without a body (this layout's, or inserted here) is a model never
        written until its state row is (a state read that finds no row needs no other read); one
        with a body (the layout before's state, or ``moved``) is taken over on first write, as
        before. An insert that finds a row (409: another worker's since the listing, of this code or
        of the code before, whose row holds a state) leaves the row's kind to that first write."""
        with translated("listing the policy's models in the directory"):
            bodies: dict[str, str] = {}
            for name, body in self._directory():
                bodies[name] = bodies.get(name) or body  # a body on any of its rows: not this layout's
            for model in dict.fromkeys(models):
                if model not in bodies:
                    self._listed_now(model)  # this worker's row (kept as this layout's), or another's since
                elif bodies[model]:
                    self._native.discard(model)
                else:
                    self._native.add(model)
                self._listed.add(model)

    def _list_in_directory(self, model: str) -> None:
        """The directory's row of ``model``, inserted if absent, before the model's first state row."""
        if model not in self._listed:
            self._listed_now(model)
            self._listed.add(model)

    def _listed_now(self, model: str) -> bool:
        """Insert the directory's row of ``model``: True when this did (the model had none: no state
        of the layout before either), False when it was there."""
        try:
            self.models.create_entity({"PartitionKey": model_key(model), "RowKey": "", "model": model})
        except ResourceExistsError:
            return False
        self._listed.add(model)
        self._native.add(model)
        return True

    def _read_model(self, model: str) -> tuple[ModelState, str]:
        try:
            entity = self.decision_rows.get_entity(model_partition(model), STATE)
        except ResourceNotFoundError:
            entity = None
        return self._state_of(model, entity)

    def get_model(self, model: str) -> ModelState:
        with translated(f"reading model {model}"):
            return self._read_model(model)[0]

    def list_models(self) -> list[ModelState]:
        """The directory (one request), then one query of each model's partition: its state row and
        its pending notifications (kept for the drain that follows: :meth:`claim_notifications`)."""
        lo, hi = prefix_range(NOTE)
        query = "PartitionKey eq @pk and (RowKey eq @state or (RowKey ge @lo and RowKey lt @hi and sent eq ''))"
        states: list[ModelState] = []
        survey: dict[str, list[Any]] = {}
        with translated("listing models"):
            for model, body in self._directory():
                state, pending = None, []
                params = {"pk": model_partition(model), "state": STATE, "lo": lo, "hi": hi}
                for entity in self.decision_rows.query_entities(query, parameters=params):
                    if entity["RowKey"] == STATE:
                        state = ModelState.from_dict(json.loads(get_body(entity)), etag=etag_of(entity))
                    else:
                        pending.append(entity)
                if state is None and not body:  # listed, never written (the change wrote nothing)
                    continue
                if state is None:  # the layout before's state (taken over from its workers first), or as moved
                    moved = json.loads(body).get("moved")
                    state = ModelState.from_dict(moved) if moved else self._directory_state(model)
                states.append(state)
                survey[model_partition(model)] = pending
                self._listed.add(model)
                (self._native.discard if body else self._native.add)(model)
        self._survey = (time.monotonic(), survey)
        return sorted(states, key=lambda s: s.model)

    def _directory(self) -> list[tuple[str, str]]:
        """Each model the directory lists, with the state its row of the layout before holds (``""``
        for a row of this layout). A row whose body is not a state (edited by hand, cut short) is listed
        by its key, body and all: only that model's own reads fail on it, not every worker's start
        (:meth:`adopt` reads the whole directory)."""
        out = []
        for row in self.models.list_entities():
            body = get_body(row)
            out.append((str(row.get("model") or _named_in(body) or row["PartitionKey"]), body))
        return out

    def update_model(
        self, model: str, change: Callable[[ModelState], tuple[ModelState | None, T]], attempts: int = 64
    ) -> T:
        """Optimistic concurrency: apply ``change`` to the state read, write only if its ETag still
        matches (or, for a model without a state row, only if nobody inserted it first); otherwise
        read and apply again. The first try applies it to the row as this worker last read or wrote
        it, without a read: the write is conditional on that row's ETag all the same, and a change
        that would write nothing is applied again to the row read (nothing is decided on what may
        be stale)."""
        with translated(f"updating model {model}"):
            for attempt in range(attempts):
                state, etag, guess = self._known_state(model)
                new, result = change(state)
                if new is None:
                    if guess:
                        continue  # decided on the guess: read the row and decide on that
                    return result
                if not etag:
                    self._list_in_directory(model)
                op, row, options = self._state_op(model, new, etag)
                try:
                    if op == "create":
                        written = self.decision_rows.create_entity(row)
                    else:
                        written = self.decision_rows.update_entity(row, **options)
                except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError):
                    self._rows.pop(model, None)
                    if not guess:
                        self.sleep(self.rng.uniform(0, min(0.05, 0.002 * 2**attempt)))
                else:
                    self._keep_row(model, row, written)
                    return result
        raise TransientError(f"model {model}: {attempts} concurrent writers in a row; retry later")

    def _known_state(self, model: str) -> tuple[ModelState, str, bool]:
        """The state to try a change on, its ETag, and whether it is a guess (the row as this worker
        last read or wrote it, taken once: the next try reads)."""
        known = self._rows.pop(model, None)
        if known is not None:
            body, etag = known
            return ModelState.from_dict(json.loads(body), etag=etag), etag, True
        try:
            entity = self.decision_rows.get_entity(model_partition(model), STATE)
        except ResourceNotFoundError:  # no state row yet: a new model, or the state of the layout before
            if model not in self._listed and self._listed_now(model):  # not adopted (outside the policy)
                return ModelState(model=model), "", False
            entity = None
        state, etag = self._state_of(model, entity)
        if etag:
            self._rows[model] = (json.dumps(state.to_dict(), sort_keys=True), etag)
        return state, etag, False

    def _keep_row(self, model: str, row: dict[str, Any], written: Any) -> None:
        """Remember the state row as written (its body and the ETag the write returned)."""
        etag = written.get("etag") if written else None
        if etag:
            self._rows[model] = (get_body(row), str(etag))


def _named_in(body: str) -> str:
    """The model a directory row's body of the layout before names; "" when it has none or cannot be read."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return ""
    return str(data.get("model") or "") if isinstance(data, dict) else ""
