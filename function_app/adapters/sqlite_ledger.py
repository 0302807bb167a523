"""The embedded ledger: SQLite, one file, safe for several processes and threads.

Writers serialise on ``BEGIN IMMEDIATE`` (WAL mode), so a guard's read-check-write of a model's
state is atomic across processes sharing the file, without optimistic retries.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from handlers.errors import TransientError
from handlers.notify import notification_of
from handlers.ports import Claim, Notification, OutboxEntry
from handlers.records import DecisionRecord, ModelState, cut, iso, may_replace
from handlers.signals import Trigger, claim_key

T = TypeVar("T")

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    key TEXT PRIMARY KEY, source TEXT, event_id TEXT NOT NULL, event_type TEXT,
    status TEXT NOT NULL, lease_until TEXT, decisions TEXT NOT NULL DEFAULT '[]',
    received_at TEXT NOT NULL, finished_at TEXT, request TEXT
);
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY, model TEXT, action TEXT, outcome TEXT, at TEXT NOT NULL,
    created_at TEXT NOT NULL, body TEXT NOT NULL
);
-- Newest first is rowid order (rows are inserted when a decision is first made); an index on
-- model (which carries the rowid) serves the per-model trail in the same order.
CREATE INDEX IF NOT EXISTS decisions_model ON decisions (model);
CREATE TABLE IF NOT EXISTS decision_events (id TEXT PRIMARY KEY, event_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS decision_events_event ON decision_events (event_id);
CREATE TABLE IF NOT EXISTS models (model TEXT PRIMARY KEY, body TEXT NOT NULL, version INTEGER NOT NULL);
-- The outbox: a decision's notification (handlers/notify.py), written in the decision's transaction,
-- pending while sent_at is NULL (sent_at: when it left, sent or, with dead_at, dead-lettered); a
-- notification id is kept once, so a rewrite never sends it again. A sender claims a row until
-- lease_until; a failed attempt counts in attempts, says why in error and backs off until due_at.
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY, created_at TEXT NOT NULL, sent_at TEXT, body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, due_at TEXT, lease_until TEXT, error TEXT, dead_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (sent_at, created_at);
"""


def event_key(trigger: Trigger) -> str:
    """Event ids are unique per source (topic); the key combines source, type and id, so that a
    redelivery (same source, type and id) matches and nothing else does, in the key space of the
    trigger's channel (:func:`handlers.signals.claim_key`)."""
    return claim_key(trigger)


def _add_request_column(db: sqlite3.Connection) -> None:
    """A ledger made before claims were bound to their request gets the column (NULL in old rows)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    if "request" not in columns:
        try:
            db.execute("ALTER TABLE events ADD COLUMN request TEXT")
        except sqlite3.OperationalError as exc:  # another process added it first
            if "duplicate column" not in str(exc):
                raise


class SqliteLedger:
    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._local = threading.local()
        self._memory: sqlite3.Connection | None = None
        self._memory_lock = threading.RLock()
        with self._memory_lock:
            self._conn().executescript(SCHEMA)
            _add_outbox_columns(self._conn())
            _add_request_column(self._conn())

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes, not power loss
        db.execute("PRAGMA wal_autocheckpoint=4000")  # fewer, larger checkpoints: less tail latency
        db.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        return db

    def _conn(self) -> sqlite3.Connection:
        if self.path == ":memory:":
            if self._memory is None:
                self._memory = self._connect()
            return self._memory
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._memory_lock if self.path == ":memory:" else _nolock():
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # database locked past the timeout
                raise TransientError(f"ledger {self.path} is busy: {exc}") from exc
            try:
                yield db
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:  # disk full, I/O error, locked: nothing of it was kept
                self._rollback(db)
                raise self._unwritable(exc) from exc
            except BaseException:
                self._rollback(db)
                raise

    def _rollback(self, db: sqlite3.Connection) -> None:
        if db.in_transaction:  # a failed COMMIT may have rolled back already (SQLite's own choice)
            try:
                db.execute("ROLLBACK")
            except sqlite3.OperationalError:
                log.warning("ledger %s: rollback after a failed write failed too", self.path, exc_info=True)

    def _unwritable(self, exc: sqlite3.OperationalError) -> TransientError:
        """A write the file refused (SQLITE_FULL, SQLITE_IOERR, SQLITE_BUSY): transient, so the caller
        answers 503 and Event Grid (or the client) retries when space or the lock is back."""
        return TransientError(f"ledger {self.path} cannot be written now ({exc}); that write was not kept, retry later")

    def _write(self, sql: str, params: tuple[object, ...]) -> int:
        """One statement is its own atomic transaction (autocommit); returns the rows changed."""
        with self._memory_lock if self.path == ":memory:" else _nolock():
            try:
                return int(self._conn().execute(sql, params).rowcount)
            except sqlite3.OperationalError as exc:  # locked past the timeout, disk full
                raise self._unwritable(exc) from exc

    # ------------------------------------------------------------------ events

    def claim_event(self, trigger: Trigger, now: datetime, lease: timedelta) -> Claim:
        key, until = event_key(trigger), iso(now + lease)
        # The request the key is bound to goes in with the claim, in one statement: of two requests
        # racing for a key, the one that did not insert it reads the winner's binding.
        inserted = self._write(
            "INSERT OR IGNORE INTO events (key, source, event_id, event_type, status, lease_until, received_at, "
            "request) VALUES (?, ?, ?, ?, 'processing', ?, ?, ?)",
            (key, trigger.source, trigger.event_id, trigger.event_type, until, iso(now), trigger.request),
        )
        if inserted:
            return Claim("new")
        bound = self._claim(key)
        if bound is not None and bound.request != trigger.request:  # never taken over, never answered from
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
            stored = [_put(db, record) for record in records]
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

    # ------------------------------------------------------------------ models

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
            row = db.execute("SELECT body, version FROM models WHERE model = ?", (model,)).fetchone()
            state = (
                ModelState(model=model) if row is None else ModelState.from_dict(json.loads(row[0]), etag=str(row[1]))
            )
            new, result = change(state)
            if new is not None:
                body = json.dumps(new.to_dict(), sort_keys=True)
                if row is None:
                    db.execute("INSERT INTO models (model, body, version) VALUES (?, ?, 1)", (model, body))
                else:
                    db.execute("UPDATE models SET body = ?, version = version + 1 WHERE model = ?", (body, model))
            return result

    # ------------------------------------------------------------------ decisions

    def put_decision(self, record: DecisionRecord) -> DecisionRecord:
        with self._tx() as db:
            return _put(db, record)

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
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

    def purge(self, before: datetime) -> int:
        cutoff = iso(before)
        with self._tx() as db:
            n = db.execute("DELETE FROM events WHERE received_at < ? AND status = 'done'", (cutoff,)).rowcount
            n += db.execute("DELETE FROM decisions WHERE created_at < ? AND outcome != 'reserved'", (cutoff,)).rowcount
            db.execute("DELETE FROM decision_events WHERE id NOT IN (SELECT id FROM decisions)")
            db.execute("DELETE FROM outbox WHERE created_at < ?", (cutoff,))  # sent or not: kept for the retention
        return int(n)

    # ------------------------------------------------------------------ outbox

    def pending_notifications(self, limit: int) -> list[Notification]:
        rows = (
            self._conn()
            .execute("SELECT body FROM outbox WHERE sent_at IS NULL ORDER BY created_at, id LIMIT ?", (limit,))
            .fetchall()
        )
        return [Notification.from_dict(json.loads(r[0])) for r in rows]

    def claim_notifications(self, limit: int, now: datetime, lease: timedelta) -> list[OutboxEntry]:
        at = iso(now)
        with self._tx() as db:  # the write lock: no other sender reads these rows unclaimed
            rows = db.execute(
                f"SELECT {_ENTRY} FROM outbox WHERE sent_at IS NULL AND (due_at IS NULL OR due_at <= ?) "
                "AND (lease_until IS NULL OR lease_until <= ?) ORDER BY created_at, id LIMIT ?",
                (at, at, limit),
            ).fetchall()
            db.executemany("UPDATE outbox SET lease_until = ? WHERE id = ?", [(iso(now + lease), r[0]) for r in rows])
        return [_entry(r) for r in rows]

    def mark_notified(self, ids: Sequence[str], now: datetime) -> None:
        if not ids:
            return
        with self._tx() as db:
            db.executemany(
                "UPDATE outbox SET sent_at = ?, lease_until = NULL WHERE id = ? AND sent_at IS NULL",
                [(iso(now), i) for i in ids],
            )

    def fail_notification(
        self, note_id: str, now: datetime, attempts: int, error: str, retry_at: datetime | None
    ) -> None:
        if retry_at is None:
            sql = "UPDATE outbox SET attempts = ?, error = ?, sent_at = ?, dead_at = ?, lease_until = NULL"
            params: tuple[object, ...] = (attempts, error, iso(now), iso(now))
        else:
            sql = "UPDATE outbox SET attempts = ?, error = ?, due_at = ?, lease_until = NULL"
            params = (attempts, error, iso(retry_at))
        self._write(f"{sql} WHERE id = ? AND sent_at IS NULL", (*params, note_id))

    def notifications(self, dead: bool = False, limit: int = 50) -> list[OutboxEntry]:
        where = "dead_at IS NOT NULL" if dead else "sent_at IS NULL"
        rows = (
            self._conn()
            .execute(f"SELECT {_ENTRY} FROM outbox WHERE {where} ORDER BY created_at DESC, id LIMIT ?", (limit,))
            .fetchall()
        )
        return [_entry(r) for r in rows]


_ENTRY = "id, body, attempts, due_at, error, sent_at, dead_at"


def _entry(row: Sequence[object]) -> OutboxEntry:
    note = Notification.from_dict(json.loads(str(row[1])))
    attempts = row[2] if isinstance(row[2], int) else 0
    return OutboxEntry(note, attempts, str(row[3] or ""), str(row[4] or ""), str(row[5] or ""), row[6] is not None)


def _add_outbox_columns(db: sqlite3.Connection) -> None:
    """A ledger file from before the outbox kept attempts: its outbox gains the columns (empty)."""
    have = {str(r[1]) for r in db.execute("PRAGMA table_info(outbox)")}
    for column in (
        "attempts INTEGER NOT NULL DEFAULT 0",
        "due_at TEXT",
        "lease_until TEXT",
        "error TEXT",
        "dead_at TEXT",
    ):
        if column.split()[0] not in have:
            try:
                db.execute(f"ALTER TABLE outbox ADD COLUMN {column}")
            except sqlite3.OperationalError as exc:  # another process opening the file added it first
                if "duplicate column" not in str(exc):
                    raise


_UPSERT_DECISION = (
    "INSERT INTO decisions (id, model, action, outcome, at, created_at, body) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET outcome = excluded.outcome, at = excluded.at, body = excluded.body"
)


# Which event a decision answers, for GET /api/decisions?event_id= (whatever model, or none, it concerns).
_INDEX_EVENT = "INSERT OR IGNORE INTO decision_events (id, event_id) VALUES (?, ?)"


_ENQUEUE = "INSERT OR IGNORE INTO outbox (id, created_at, body) VALUES (?, ?, ?)"


def _put(db: sqlite3.Connection, record: DecisionRecord) -> DecisionRecord:
    """Write ``record`` in the open transaction unless the record under its id may not be replaced
    by it (:func:`handlers.records.may_replace`); the record stored, either way. The read and the
    write are one transaction (``BEGIN IMMEDIATE`` holds the write lock), so no writer slips between."""
    row = db.execute("SELECT body FROM decisions WHERE id = ?", (record.id,)).fetchone()
    if row is not None:
        stored = DecisionRecord.from_dict(json.loads(row[0]))
        if not may_replace(stored, record):
            return stored
    db.execute(_UPSERT_DECISION, _decision_row(record))
    db.execute(_INDEX_EVENT, (record.id, _event_of(record)))
    db.executemany(_ENQUEUE, _outbox_rows([record]))
    return record


def _outbox_rows(records: Sequence[DecisionRecord]) -> list[tuple[object, ...]]:
    notes = [n for n in map(notification_of, records) if n is not None]
    return [(n.id, n.time, json.dumps(n.to_dict(), default=str)) for n in notes]


def _event_of(record: DecisionRecord) -> str:
    return cut(str(record.trigger.get("event_id") or ""))


def _decision_row(record: DecisionRecord) -> tuple[object, ...]:
    body = json.dumps(record.to_dict(), default=str)
    return (record.id, record.model, record.action, record.outcome, record.at, record.at, body)


@contextmanager
def _nolock() -> Iterator[None]:
    yield
