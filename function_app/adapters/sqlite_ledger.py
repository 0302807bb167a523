"""The embedded ledger: SQLite, one file, safe for several processes and threads.

Its parts: the file, its schema and transactions (:mod:`function_app.adapters.sqlite_store`), the
outbox (:mod:`function_app.adapters.sqlite_outbox`); here events, models and decisions. Writers serialise on ``BEGIN IMMEDIATE`` (WAL mode), so a guard's read-check-write of a model's
state is atomic across processes sharing the file, without optimistic retries.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TypeVar

from function_app.adapters.sqlite_outbox import OWN_KEPT, SqliteOutbox
from handlers.idempotency import same_request
from handlers.notify import notification_of
from handlers.ports import Claim
from handlers.recorded import RecordedEvent
from handlers.records import DecisionRecord, ModelState, cut, from_iso, iso, may_replace, refused
from handlers.signals import Trigger, claim_key

T = TypeVar("T")


def event_key(trigger: Trigger) -> str:
    """Event ids are unique per source (topic); the key combines source, type and id, so that a
    redelivery (same source, type and id) matches and nothing else does, in the key space of the
    trigger's channel (:func:`handlers.signals.claim_key`)."""
    return claim_key(trigger)


class SqliteLedger(SqliteOutbox):
    """Events, models and decisions; the outbox and the file's connections are its parts."""

    # ------------------------------------------------------------------ events

    def claim_event(self, trigger: Trigger, now: datetime, lease: timedelta, signal: str | None = None) -> Claim:
        key, until = event_key(trigger), iso(now + lease)
        # The request the key is bound to goes in with the claim, in one statement: of two requests
        # racing for a key, the one that did not insert it reads the winner's binding.
        inserted = self._write(
            "INSERT OR IGNORE INTO events (key, source, event_id, event_type, status, lease_until, received_at, "
            "request, signal) VALUES (?, ?, ?, ?, 'processing', ?, ?, ?, ?)",
            (key, trigger.source, trigger.event_id, trigger.event_type, until, iso(now), trigger.request, signal),
        )
        if inserted:
            return Claim("new")
        bound = self._claim(key)
        # another request's key: never taken over, never answered from (a key bound before keys were bound to
        # callers is this request's when the rest of its digest is: taken over once its lease runs out, as any)
        if bound is not None and not same_request(bound.request, trigger.request):
            return replace(bound, status="reused")
        if bound is not None and bound.status == "done":  # final: a redelivery needs no write
            return Claim("done", bound.decisions)
        # Seen before: take over an unfinished claim only if its lease has run out (one statement, atomic).
        taken = self._write(
            "UPDATE events SET lease_until = ? WHERE key = ? AND status = 'processing' "
            "AND (lease_until IS NULL OR lease_until <= ?)",
            (until, key, iso(now)),
        )
        if taken:
            return Claim("retry")
        row = self._conn().execute("SELECT status, decisions FROM events WHERE key = ?", (key,)).fetchone()
        if row is not None and row[0] == "done":
            return Claim("done", tuple(json.loads(row[1])))
        return Claim("busy")

    def abandon_event(self, trigger: Trigger) -> None:
        self._write(
            "UPDATE events SET lease_until = NULL WHERE key = ? AND status = 'processing'", (event_key(trigger),)
        )

    def finish_event(
        self, trigger: Trigger, decision_ids: Sequence[str], now: datetime, records: Sequence[DecisionRecord] = ()
    ) -> list[DecisionRecord]:
        done = (
            "UPDATE events SET status = 'done', lease_until = NULL, decisions = ?, finished_at = ? WHERE key = ?",
            (json.dumps(list(decision_ids)), iso(now), event_key(trigger)),
        )
        if not records:
            self._write(*done)
            return []
        with self._tx() as db:
            stored = [_put(db, record, self._own, self._send_lease) for record in records]
            db.execute(*done)
        return stored

    def event_claim(self, trigger: Trigger) -> Claim | None:
        return self._claim(event_key(trigger))

    def _claim(self, key: str) -> Claim | None:
        row = (
            self._conn()
            .execute("SELECT status, decisions, received_at, event_type, request FROM events WHERE key = ?", (key,))
            .fetchone()
        )
        if row is None:
            return None
        return Claim(str(row[0]), tuple(json.loads(row[1])), str(row[2] or ""), str(row[3] or ""), row[4])

    def event_status(self, trigger: Trigger) -> tuple[str, list[str]] | None:
        row = (
            self._conn().execute("SELECT status, decisions FROM events WHERE key = ?", (event_key(trigger),)).fetchone()
        )
        return None if row is None else (row[0], json.loads(row[1]))

    def recorded_events(self, since: datetime, limit: int) -> list[RecordedEvent]:
        rows = (
            self._conn()
            .execute(
                "SELECT source, event_id, event_type, received_at, status, decisions, signal FROM events "
                "WHERE received_at >= ? ORDER BY received_at, key LIMIT ?",
                (iso(since), limit),
            )
            .fetchall()
        )
        return [
            RecordedEvent(
                str(r[0] or ""), str(r[1]), str(r[2] or ""), str(r[3]), str(r[4]), tuple(json.loads(r[5])), r[6]
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ models

    def adopt(self, models: Iterable[str]) -> None:
        """Nothing to prepare: a model's first write is one SQL transaction, whatever the worker knows."""

    def get_model(self, model: str) -> ModelState:
        row = self._conn().execute("SELECT body, version FROM models WHERE model = ?", (model,)).fetchone()
        if row is None:
            return ModelState(model=model)
        return ModelState.from_dict(json.loads(row[0]), etag=str(row[1]))

    def list_models(self) -> list[ModelState]:
        rows = self._conn().execute("SELECT body, version FROM models ORDER BY model").fetchall()
        return [ModelState.from_dict(json.loads(b), etag=str(v)) for b, v in rows]

    def update_model(self, model: str, change: Callable[[ModelState], tuple[ModelState | None, T]]) -> T:
        # Most changes in a storm are refusals that write nothing: decide those without the write lock.
        # Only when the change wants to write is it re-applied under the lock, to the state as it is then.
        new, result = change(self.get_model(model))
        if new is None:
            return result
        with self._tx() as db:
            state, row = _state(db, model)
            new, result = change(state)
            if new is not None:
                _write_state(db, model, new, row)
            return result

    # ------------------------------------------------------------------ decisions

    def put_decision(self, record: DecisionRecord) -> DecisionRecord:
        with self._tx() as db:
            return _put(db, record, self._own, self._send_lease)

    def reserve(
        self,
        model: str,
        change: Callable[[ModelState], tuple[ModelState | None, T]],
        record_of: Callable[[T], DecisionRecord | None],
    ) -> tuple[T, DecisionRecord | None]:
        new, result = change(self.get_model(model))
        if new is None:  # a refusal writes nothing: decided without the write lock, as update_model does
            return result, None
        with self._tx() as db:
            state, row = _state(db, model)
            new, result = change(state)
            if new is None:
                return result, None
            record = record_of(result)
            stored = None
            if record is not None:
                stored = _put(db, record, self._own, self._send_lease)
                if stored is not record:  # a final record stood: nothing written, the slot not taken
                    return result, stored
            _write_state(db, model, new, row)
            return result, stored

    def record_and_update(
        self, model: str, record: DecisionRecord, change: Callable[[ModelState, DecisionRecord], ModelState | None]
    ) -> DecisionRecord:
        with self._tx() as db:
            stored = _put(db, record, self._own, self._send_lease)
            state, row = _state(db, model)
            new = change(state, stored)
            if new is not None:
                _write_state(db, model, new, row)
            return stored

    def get_decision(self, decision_id: str, model: str | None = None) -> DecisionRecord | None:
        row = self._conn().execute("SELECT body FROM decisions WHERE id = ?", (decision_id,)).fetchone()
        return None if row is None else DecisionRecord.from_dict(json.loads(row[0]))

    def decisions(
        self,
        model: str | None = None,
        limit: int = 50,
        *,
        event_id: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
    ) -> list[DecisionRecord]:
        where, params = [], []
        if model:
            where.append("d.model = ?")
            params.append(model)
        if event_id is not None:
            where.append("d.id IN (SELECT id FROM decision_events WHERE event_id = ?)")
            params.append(cut(event_id))  # as the record keeps it: an id over MAX_TEXT is cut, with its digest
        if outcome:
            where.append("d.outcome = ?")
            params.append(outcome)
        if since is not None:
            where.append("d.created_at >= ?")
            params.append(iso(since))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = (
            self._conn()
            .execute(f"SELECT d.body FROM decisions d{clause} ORDER BY d.rowid DESC LIMIT ?", (*params, limit))
            .fetchall()
        )
        return [DecisionRecord.from_dict(json.loads(r[0])) for r in rows]

    def model_history(self, model: str) -> list[DecisionRecord]:
        rows = (
            self._conn()
            .execute(
                "SELECT d.body FROM decisions d WHERE d.model = ? AND NOT (d.outcome = 'skipped' AND "
                "COALESCE(json_extract(d.body, '$.details.guard'), '') NOT IN ('', 0)) ORDER BY d.rowid DESC",
                (model,),
            )
            .fetchall()
        )
        return [r for r in (DecisionRecord.from_dict(json.loads(row[0])) for row in rows) if not refused(r)]

    def purge(self, before: datetime) -> int:
        cutoff = iso(before)
        with self._tx() as db:
            n = db.execute("DELETE FROM events WHERE received_at < ? AND status = 'done'", (cutoff,)).rowcount
            n += db.execute("DELETE FROM decisions WHERE created_at < ? AND outcome != 'reserved'", (cutoff,)).rowcount
            db.execute("DELETE FROM decision_events WHERE id NOT IN (SELECT id FROM decisions)")
            db.execute("DELETE FROM outbox WHERE created_at < ?", (cutoff,))  # sent or not: kept for the retention
        return int(n)


_UPSERT_DECISION = (
    "INSERT INTO decisions (id, model, action, outcome, at, created_at, body) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET outcome = excluded.outcome, at = excluded.at, body = excluded.body"
)


# Which event a decision answers, for GET /api/decisions?event_id= (whatever model, or none, it concerns).
_INDEX_EVENT = "INSERT OR IGNORE INTO decision_events (id, event_id) VALUES (?, ?)"


# A notification its writer sends as its delivery ends (sends_own) goes in claimed by it (lease_until).
_ENQUEUE = "INSERT OR IGNORE INTO outbox (id, created_at, body, lease_until) VALUES (?, ?, ?, ?)"


def _state(db: sqlite3.Connection, model: str) -> tuple[ModelState, object]:
    """The model's state as the open transaction reads it, and its row (None: none yet)."""
    row = db.execute("SELECT body, version FROM models WHERE model = ?", (model,)).fetchone()
    return (ModelState(model=model) if row is None else ModelState.from_dict(json.loads(row[0]), etag=str(row[1]))), row


def _write_state(db: sqlite3.Connection, model: str, new: ModelState, row: object) -> None:
    body = json.dumps(new.to_dict(), sort_keys=True)
    if row is None:
        db.execute("INSERT INTO models (model, body, version) VALUES (?, ?, 1)", (model, body))
    else:
        db.execute("UPDATE models SET body = ?, version = version + 1 WHERE model = ?", (body, model))


def _put(
    db: sqlite3.Connection, record: DecisionRecord, own: dict[str, str], send_lease: timedelta | None = None
) -> DecisionRecord:
    """Write ``record`` in the open transaction unless the record under its id may not be replaced
    by it (:func:`handlers.records.may_replace`); the record stored, either way. The notification it
    puts in the outbox (one not there yet) goes into ``own``, the ledger's to send as its delivery ends. The read and the
    write are one transaction (``BEGIN IMMEDIATE`` holds the write lock), so no writer slips between."""
    row = db.execute("SELECT body FROM decisions WHERE id = ?", (record.id,)).fetchone()
    if row is not None:
        stored = DecisionRecord.from_dict(json.loads(row[0]))
        if not may_replace(stored, record):
            return stored
    db.execute(_UPSERT_DECISION, _decision_row(record))
    db.execute(_INDEX_EVENT, (record.id, _event_of(record)))
    for row in _outbox_rows([record]):
        moment = from_iso(str(row[1]))
        until = iso(moment + send_lease) if send_lease is not None and moment and len(own) < OWN_KEPT else None
        if db.execute(_ENQUEUE, (*row, until)).rowcount:
            if len(own) >= OWN_KEPT:
                own.clear()  # a worker that does not send (no topic): left to the reconciler's drain
            own[str(row[0])] = until or ""
    return record


def _outbox_rows(records: Sequence[DecisionRecord]) -> list[tuple[object, ...]]:
    notes = [n for n in map(notification_of, records) if n is not None]
    return [(n.id, n.time, json.dumps(n.to_dict(), default=str)) for n in notes]


def _event_of(record: DecisionRecord) -> str:
    return cut(str(record.trigger.get("event_id") or ""))


def _decision_row(record: DecisionRecord) -> tuple[object, ...]:
    body = json.dumps(record.to_dict(), default=str)
    return (record.id, record.model, record.action, record.outcome, record.at, record.at, body)
