"""The SQLite ledger's file: its schema (and the columns an older file gains), and the connections,
transactions and one-statement writes the ledger's parts share.

Writers serialise on ``BEGIN IMMEDIATE`` (WAL mode), so a guard's read-check-write of a model's
state is atomic across processes sharing the file, without optimistic retries.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from handlers.errors import TransientError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    key TEXT PRIMARY KEY, source TEXT, event_id TEXT NOT NULL, event_type TEXT,
    status TEXT NOT NULL, lease_until TEXT, decisions TEXT NOT NULL DEFAULT '[]',
    received_at TEXT NOT NULL, finished_at TEXT, request TEXT, signal TEXT
);
CREATE INDEX IF NOT EXISTS events_received ON events (received_at);
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


def _add_event_columns(db: sqlite3.Connection) -> None:
    """A ledger made before claims were bound to their request, or before they kept their signal (for
    ``retrain backtest``), gets the column (NULL in old rows: those events cannot be replayed)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    for column in ("request", "signal"):
        if column not in columns:
            try:
                db.execute(f"ALTER TABLE events ADD COLUMN {column} TEXT")
            except sqlite3.OperationalError as exc:  # another process added it first
                if "duplicate column" not in str(exc):
                    raise


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


class SqliteStore:
    """One file (or ``:memory:``), a connection per thread, and transactions on it."""

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
            _add_event_columns(self._conn())

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


@contextmanager
def _nolock() -> Iterator[None]:
    yield
