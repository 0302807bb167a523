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
    DECISION_PARTITIONS,
    MAX_BATCH_CHARS,
    REMEMBERED,
    Stored,
    decision_partition,
    home_partition,
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

    def _put_unheard(self, record: DecisionRecord) -> DecisionRecord:
        """:meth:`put_decision` of a record under whose id nothing is stored anywhere (the first
        decision of an event this worker claimed first: :meth:`TableEvents._unheard_of`), so nothing
        is read before it is written."""
        with translated(f"writing decision {record.id}"):
            return self._commit(record, None, unheard=True)

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
            stored: Stored | None = None
            old: Stored | None = None
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
                if stored is None and old is None:  # a record in its shard, read by this worker
                    old = stored = self._seen.pop(record.id, None)
                if stored is not None and not may_replace(stored.record, record):
                    return result, stored.record
                if not etag:
                    self._list_in_directory(model)
                ops = self._record_ops(record, stored, self._home(record, stored))
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
                self._moved(stored, ops[0][1]["PartitionKey"])
                self._remember(record, ops[0][1], done)
                self._keep_row(model, ops[n][1], done[n] if len(done) > n else None)
                return result, record
        raise TransientError(f"model {model}: {attempts} concurrent writers in a row; retry later")

    # ------------------------------------------------------------------ one transaction

    def _commit(
        self, record: DecisionRecord, settle: Settle | None, attempts: int = 16, *, unheard: bool = False
    ) -> DecisionRecord:
        """Write ``record`` (as may_replace allows), its notification (unless there) and, with
        ``settle``, its model's state row as the record stored changes it, in one transaction.
        ``unheard``: nothing is stored under its id anywhere, so no other partition is read first."""
        body = json.dumps(record.to_dict(), default=str)
        if len(body) * 3 > MAX_BATCH_CHARS:  # bounded records are far smaller: a bug
            raise PermanentError(f"record of {len(body)} characters is too large to write with its trail rows")
        model = record.model or ""
        stored = self._written.pop(record.id, None) or self._seen.pop(record.id, None)
        if stored is None and not unheard:
            stored = self._elsewhere(record)
        if model and self._home(record, stored) not in DECISION_PARTITIONS:
            self._list_in_directory(model)  # every partition that holds records is listed (trails read them)
        note = notification_of(record)
        note_there = note is None
        for attempt in range(attempts):
            ops, target, note_at = self._writes(record, stored, note_there)
            state_at = len(ops)
            apart = bool(ops) and ops[0][1]["PartitionKey"] != model_partition(model)  # a record in its shard
            if settle is not None and not apart:
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
                self._moved(stored, ops[0][1]["PartitionKey"])
                self._remember(record, ops[0][1], done)
                if note_at >= 0 and len(done) > note_at:
                    self._keep_own(ops[note_at][1], done[note_at])
            if settle is not None and len(ops) > state_at:
                self._keep_row(model, ops[state_at][1], done[state_at] if len(done) > state_at else None)
            if settle is not None and apart:  # the record first, then the change it makes (as update_model)
                self._settle_apart(model, settle, target)
            return target
        raise TransientError(f"decision {record.id}: {attempts} concurrent writers in a row; retry later")

    def _settle_apart(self, model: str, settle: Settle, stored: DecisionRecord) -> None:
        self.update_model(model, lambda s: (settle(s, stored), None))

    def _home(self, record: DecisionRecord, stored: Stored | None) -> str:
        """The partition ``record`` is written to (:func:`home_partition`)."""
        return home_partition(record, stored.partition if stored else None, notification_of(record) is not None)

    def _writes(
        self, record: DecisionRecord, stored: Stored | None, note_there: bool
    ) -> tuple[list[Op], DecisionRecord, int]:
        """What writing ``record`` over ``stored`` takes: its rows and its notification's (unless
        ``note_there``), the record that stands after it, and the notification's place among them
        (-1: none); no rows when ``stored`` may not be replaced by it (it stands)."""
        if stored is not None and not may_replace(stored.record, record):
            return [], stored.record, -1
        ops = self._record_ops(record, stored, self._home(record, stored))
        if note_there:
            return ops, record, -1
        return [*ops, self._note_op(record)], record, len(ops)

    def _record_ops(self, record: DecisionRecord, stored: Stored | None, pk: str) -> list[Op]:
        """The record row in partition ``pk`` (an insert, or a replace conditional on the ETag
        ``stored`` was read with when it is there) and its trail rows (upserts: the same keys as any
        earlier write of the same decision): of all and of its event, and in a shard of its model too
        (a model's partition is its trail)."""
        body = json.dumps(record.to_dict(), default=str)
        created = stored.created if stored is not None else record.at
        columns = {"PartitionKey": pk, "model": record.model or ""}
        columns |= {"outcome": record.outcome, "at": record.at, "created": created, "decision": record.id}
        replace: dict[str, Any] = {"mode": UpdateMode.REPLACE}
        row = put_body({**columns, "RowKey": record_key(record.id)}, body)
        if stored is None or stored.partition != pk:
            ops: list[Op] = [("create", row, {})]
        else:
            condition = {"etag": stored.etag, "match_condition": MatchConditions.IfNotModified}
            ops = [("update", row, replace | condition)]
        tk = trail_key(created, record.id)
        event = trail_prefix(event_id=str(record.trigger.get("event_id") or ""))
        prefixes = trail_prefixes(record) if pk in DECISION_PARTITIONS else [trail_prefix(), event]
        for prefix in prefixes:
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

    def _remember(self, record: DecisionRecord, row: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> None:
        """Keep where the record row went and the ETag a transaction gave it, for a rewrite by this
        worker (a ``reserved`` record's outcome) without a read; a final record is not rewritten, so
        it is not kept."""
        pk = str(row["PartitionKey"])
        self._where_put(record.id, pk)
        self._seen.pop(record.id, None)  # as read before this write: stale now
        etag = results[0].get("etag") if results else None
        if record.outcome != "reserved" or not etag:
            return
        if len(self._written) >= REMEMBERED:
            self._written.clear()
        self._written[record.id] = Stored(record, str(row["created"]), str(etag), pk)

    def _moved(self, stored: Stored | None, pk: str) -> None:
        """Delete the rows of a record rewritten in another partition (from its shard to its model's:
        a refusal given way to a reservation, or a record of the layout before), in one transaction in
        its shard, so no trail shows it twice."""
        if stored is None or stored.partition == pk:
            return
        old, tk = stored.record, trail_key(stored.created, stored.record.id)
        keys = [record_key(old.id)] + [prefix + tk for prefix in trail_prefixes(old)]
        try:
            self.decision_rows.submit_transaction(
                [("delete", {"PartitionKey": stored.partition, "RowKey": k}) for k in keys]
            )
        except TableTransactionError:  # one of them gone already (purged, or another worker's): each alone
            for k in keys:
                with contextlib.suppress(ResourceNotFoundError):
                    self.decision_rows.delete_entity(stored.partition, k)

    def _elsewhere(self, record: DecisionRecord) -> Stored | None:
        """Before a first write that this worker knows nothing of: the record stored under its id in
        the partition its own insert cannot find it in (a refusal going to its shard: its model's
        partition; anything else but a reservation: its shard). A reservation reads nothing more: a
        refusal gives way to it, and one in its shard is hidden by it (:meth:`get_decision`)."""
        home = self._home(record, None)
        if home in DECISION_PARTITIONS:
            return self._stored(record.id, model_partition(record.model)) if record.model else None
        if (
            record.outcome == "reserved"
            or self._where.get(record.id, DECISION_PARTITIONS[0]) not in DECISION_PARTITIONS
        ):
            return None  # a reservation; or a record this worker saw in its model's partition (its insert finds it)
        return self._stored(record.id, decision_partition(record.id))

    def _read_record(self, decision_id: str, model: str | None) -> Stored | None:
        """The record stored under ``decision_id`` (in its model's partition, else in its id's shard)
        as it is stored; or None."""
        return self._stored(decision_id, model_partition(model)) or self._stored(
            decision_id, decision_partition(decision_id)
        )
