"""The Table ledger's decisions: a record row, its trail rows and its notification in its model's
partition of the decisions table (``m:<model>``, ``-`` for none), beside the model's state row, so
that a record, its notification and the change of its model's slot it makes are one entity group
transaction (:meth:`TableDecisions.reserve`, :meth:`TableDecisions.record_and_update`). A final
record is never downgraded (conditional writes, read again on 412). Records of the layout before
(shards ``d0`` .. ``d7``) are read where the new partition has none (:mod:`table_trails`)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode

from function_app.adapters.azure_errors import translated
from function_app.adapters.table_entities import (
    CHANGED_MEANWHILE,
    MAX_BATCH_CHARS,
    REMEMBERED,
    decision_partition,
    etag_of,
    get_body,
    model_partition,
    note_key,
    put_body,
    record_key,
    trail_key,
    trail_prefix,
    trail_prefixes,
)
from function_app.adapters.table_trails import TableTrails
from handlers.errors import PermanentError, TransientError
from handlers.notify import notification_of
from handlers.records import DecisionRecord, ModelState, from_iso, iso, may_replace

T = TypeVar("T")
Op = tuple[str, dict[str, Any], dict[str, Any]]
Settle = Callable[[ModelState, DecisionRecord], "ModelState | None"]


def _code(exc: TableTransactionError) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code))


class TableDecisions(TableTrails):
    """Writes of records, alone or with their model's state row."""

    # ------------------------------------------------------------------ the port's writes

    def put_decision(self, record: DecisionRecord) -> DecisionRecord:
        """The record, its trail rows and its notification (unless there already: kept once), in one
        transaction. A record under the same id is replaced only as may_replace allows, by an update
        conditional on the ETag read (read again on 412); otherwise it is kept and returned."""
        with translated(f"writing decision {record.id}"):
            return self._commit(record, None)

    def record_and_update(self, model: str, record: DecisionRecord, change: Settle) -> DecisionRecord:
        """:meth:`put_decision`, and the change of ``model``'s state that the record stored makes
        (``change(state, stored)``, None: none), in one transaction."""
        if model_partition(record.model) != model_partition(model):  # another partition: two writes
            stored = self.put_decision(record)
            self.update_model(model, lambda s: (change(s, stored), None))
            return stored
        with translated(f"writing decision {record.id} with model {model}"):
            return self._commit(record, change)

    def reserve(
        self,
        model: str,
        change: Callable[[ModelState], tuple[ModelState | None, T]],
        record_of: Callable[[T], DecisionRecord | None],
        attempts: int = 64,
    ) -> tuple[T, DecisionRecord | None]:
        """``change`` applied as :meth:`update_model` applies it and, when it writes a state and
        ``record_of`` its result gives a record, that record (a first write) in the same transaction.
        When a record stored under its id may not be replaced by it, nothing is written: the result
        and the stored record are returned."""
        with translated(f"reserving model {model}"):
            stored: tuple[DecisionRecord, str, str] | None = None
            old: tuple[DecisionRecord, str, str] | None = None
            for attempt in range(attempts):
                state, etag, guess = self._known_state(model)
                new, result = change(state)
                if new is None:
                    if guess:
                        continue
                    return result, None
                record = record_of(result)
                if record is None or model_partition(record.model) != model_partition(model):
                    result = self.update_model(model, change)  # the state alone; the record (if any) after it
                    return result, None if record is None else self.put_decision(record)
                if stored is None and old is None:  # a record of the layout before, read by this worker
                    old = stored = self._old.pop(record.id, None)
                if stored is not None and not may_replace(stored[0], record):
                    return result, stored[0]
                if not etag:
                    self._list_in_directory(model)
                ops = self._record_ops(record, stored)
                n = len(ops)
                ops.append(self._state_op(model, new, etag))
                try:
                    done = self.decision_rows.submit_transaction(ops)
                except TableTransactionError as exc:
                    if _code(exc) not in CHANGED_MEANWHILE | {"EntityAlreadyExists"}:
                        raise
                    if exc.index == 0:  # the record: another writer's is there
                        stored = self._read_record(record.id, record.model)
                    else:  # the state row changed since
                        self._rows.pop(model, None)
                        if not guess:
                            self.sleep(self.rng.uniform(0, min(0.05, 0.002 * 2**attempt)))
                    continue
                if stored is not None and not stored[2]:  # written over a record of the layout before
                    self._drop_old(stored[0], stored[1])
                self._remember(record, ops[0][1]["created"], done)
                self._keep_row(model, ops[n][1], done[n] if len(done) > n else None)
                return result, record
        raise TransientError(f"model {model}: {attempts} concurrent writers in a row; retry later")

    # ------------------------------------------------------------------ one transaction

    def _commit(self, record: DecisionRecord, settle: Settle | None, attempts: int = 16) -> DecisionRecord:
        """Write ``record`` (as may_replace allows), its notification (unless there) and, with
        ``settle``, its model's state row as the record stored changes it, in one transaction."""
        body = json.dumps(record.to_dict(), default=str)
        if len(body) * 3 > MAX_BATCH_CHARS:  # bounded records are far smaller: a bug
            raise PermanentError(f"record of {len(body)} characters is too large to write with its trail rows")
        model = record.model or ""
        if model:
            self._list_in_directory(model)  # every partition that holds records is listed (trails read them)
        stored = self._written.pop(record.id, None) or self._old.pop(record.id, None)
        note = notification_of(record)
        note_there = note is None
        for attempt in range(attempts):
            ops, target, note_at = self._writes(record, stored, note_there)
            state_at = len(ops)
            if settle is not None:
                state, etag, guess = self._known_state(model)
                new = settle(state, target)
                if new is None and guess:
                    continue  # decided on a guess: read the row and decide on that
                if new is not None:
                    if not etag:
                        self._list_in_directory(model)
                    ops.append(self._state_op(model, new, etag))
            if not ops:
                return target
            try:
                done = self.decision_rows.submit_transaction(ops)
            except TableTransactionError as exc:
                if _code(exc) not in CHANGED_MEANWHILE | {"EntityAlreadyExists"}:
                    raise
                if exc.index >= state_at:  # the state row changed since
                    self._rows.pop(model, None)
                    self.sleep(self.rng.uniform(0, min(0.05, 0.002 * 2**attempt)))
                elif exc.index == note_at:
                    note_there = True  # in the outbox already (pending or sent): kept once
                else:  # the record: another writer's since, or one this worker did not know
                    stored = self._read_record(record.id, record.model)
                continue
            if target is record:
                if stored is not None and not stored[2]:  # written over a record of the layout before
                    self._drop_old(stored[0], stored[1])
                self._remember(record, ops[0][1]["created"], done)
                if note_at >= 0 and len(done) > note_at:
                    self._keep_own(ops[note_at][1], done[note_at])
            if settle is not None and len(ops) > state_at:
                self._keep_row(model, ops[state_at][1], done[state_at] if len(done) > state_at else None)
            return target
        raise TransientError(f"decision {record.id}: {attempts} concurrent writers in a row; retry later")

    def _writes(
        self, record: DecisionRecord, stored: tuple[DecisionRecord, str, str] | None, note_there: bool
    ) -> tuple[list[Op], DecisionRecord, int]:
        """What writing ``record`` over ``stored`` takes: its rows and its notification's (unless
        ``note_there``), the record that stands after it, and the notification's place among them
        (-1: none); no rows when ``stored`` may not be replaced by it (it stands)."""
        if stored is not None and not may_replace(stored[0], record):
            return [], stored[0], -1
        ops = self._record_ops(record, stored)
        if note_there:
            return ops, record, -1
        return [*ops, self._note_op(record)], record, len(ops)

    def _record_ops(self, record: DecisionRecord, stored: tuple[DecisionRecord, str, str] | None) -> list[Op]:
        """The record row (an insert, or a replace conditional on the ETag ``stored`` was read with)
        and its trail rows (upserts: the same keys as any earlier write of the same decision)."""
        body = json.dumps(record.to_dict(), default=str)
        created = stored[1] if stored is not None else record.at
        columns = {"PartitionKey": model_partition(record.model), "model": record.model or ""}
        columns |= {"outcome": record.outcome, "at": record.at, "created": created, "decision": record.id}
        replace: dict[str, Any] = {"mode": UpdateMode.REPLACE}
        row = put_body({**columns, "RowKey": record_key(record.id)}, body)
        if stored is None or not stored[2]:
            ops: list[Op] = [("create", row, {})]
        else:
            condition = {"etag": stored[2], "match_condition": MatchConditions.IfNotModified}
            ops = [("update", row, replace | condition)]
        tk = trail_key(created, record.id)
        for prefix in (trail_prefix(), trail_prefix(event_id=str(record.trigger.get("event_id") or ""))):
            ops.append(("upsert", put_body({**columns, "RowKey": prefix + tk}, body), replace))
        return ops

    def _note_op(self, record: DecisionRecord) -> Op:
        """The insert of ``record``'s notification: claimed already by this worker for its lease when
        it sends what it writes (:meth:`sends_own`), else claimed by no one."""
        note = notification_of(record)
        assert note is not None
        until = ""
        if self._send_lease is not None and len(self._own) < REMEMBERED:
            moment = from_iso(note.time)
            until = iso(moment + self._send_lease) if moment else ""
        entity = {"PartitionKey": model_partition(record.model), "RowKey": note_key(note.id)}
        entity |= {"created": note.time, "sent": "", "lease": until, "outcome": record.outcome, "note": note.id}
        return "create", put_body(entity, json.dumps(note.to_dict(), default=str)), {}

    def _keep_own(self, entity: dict[str, Any], result: Mapping[str, Any]) -> None:
        """A notification this worker inserted: sent as its delivery ends (:meth:`claim_own_notifications`)."""
        etag = result.get("etag")
        if not etag:
            return
        if len(self._own) >= REMEMBERED:
            self._own.clear()  # left to the reconciler's drain
        self._own[str(entity["note"])] = (entity, str(etag))

    def _remember(self, record: DecisionRecord, created: str, results: Sequence[Mapping[str, Any]]) -> None:
        """Keep the ETag a transaction gave the record row, for a rewrite by this worker (a ``reserved``
        record's outcome) without a read; a final record is not rewritten, so it is not kept."""
        self._where_put(record.id, model_partition(record.model))
        etag = results[0].get("etag") if results else None
        if record.outcome != "reserved" or not etag:
            return
        if len(self._written) >= REMEMBERED:
            self._written.clear()
        self._written[record.id] = (record, created, str(etag))

    def _drop_old(self, old: DecisionRecord, created: str) -> None:
        """Delete the rows of the layout before of a record now written in its model's partition (its
        record row and trail rows, one transaction in its shard), so no trail shows it twice."""
        pk, tk = decision_partition(old.id), trail_key(created, old.id)
        keys = [record_key(old.id)] + [prefix + tk for prefix in trail_prefixes(old)]
        try:
            self.decision_rows.submit_transaction([("delete", {"PartitionKey": pk, "RowKey": k}) for k in keys])
        except TableTransactionError:  # one of them gone already (purged, or another worker's): each alone
            for k in keys:
                with contextlib.suppress(ResourceNotFoundError):
                    self.decision_rows.delete_entity(pk, k)

    def _read_record(self, decision_id: str, model: str | None) -> tuple[DecisionRecord, str, str] | None:
        """The record stored under ``decision_id`` in its model's partition, the time it was first
        written and its ETag (``""`` for a record of the layout before: written anew); or None."""
        entity = self._point(model_partition(model), record_key(decision_id))
        if entity is not None:
            return DecisionRecord.from_dict(json.loads(get_body(entity))), str(entity["created"]), etag_of(entity)
        old = self._old_record(decision_id)
        if old is None:
            return None
        return DecisionRecord.from_dict(json.loads(get_body(old))), str(old["created"]), ""
