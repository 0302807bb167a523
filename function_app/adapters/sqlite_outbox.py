"""The SQLite ledger's outbox: notifications written in their decision's transaction (see
:func:`function_app.adapters.sqlite_ledger`), claimed under the write lock, marked sent or failed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from function_app.adapters.sqlite_store import SqliteStore
from handlers.ports import Notification, OutboxEntry
from handlers.records import iso

OWN_KEPT = 256  # notifications a ledger keeps for claim_own_notifications (a worker without a topic claims none)


class SqliteOutbox(SqliteStore):
    """The ``outbox`` table (its schema: :data:`function_app.adapters.sqlite_store.SCHEMA`)."""

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        super().__init__(path, timeout)
        # The notifications this ledger put in the outbox and has not claimed yet (in order), each
        # with the claim it was written with ("" for none: see sends_own).
        self._own: dict[str, str] = {}
        self._send_lease: timedelta | None = None

    def sends_own(self, lease: timedelta) -> None:
        self._send_lease = lease

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
        for r in rows:
            self._own.pop(str(r[0]), None)  # claimed here: not this ledger's to claim again
        return [_entry(r) for r in rows]

    def claim_own_notifications(self, limit: int, now: datetime, lease: timedelta) -> list[OutboxEntry]:
        # Up to ``limit`` of them, each taken out of ``_own`` once (pop gives its claim, a string, only
        # to the one caller that takes it), the rest kept for the next call. One written claimed by this
        # ledger is its own while at least half of ``lease`` of that claim is left; any other is claimed.
        taken = {i: self._own.pop(i, None) for i in list(self._own)[: max(0, limit)]}
        held = [i for i, until in taken.items() if until is not None and until >= iso(now + lease / 2)]
        mine = [i for i, until in taken.items() if until is not None and i not in held]
        if not held and not mine:
            return []
        at = iso(now)
        with self._tx() as db:  # the write lock: no other sender claims these meanwhile
            rows = db.execute(
                f"SELECT {_ENTRY} FROM outbox WHERE id IN ({', '.join('?' * len(mine))}) AND sent_at IS NULL "
                "AND (due_at IS NULL OR due_at <= ?) AND (lease_until IS NULL OR lease_until <= ?) ORDER BY created_at, id",
                (*mine, at, at),
            ).fetchall()
            db.executemany("UPDATE outbox SET lease_until = ? WHERE id = ?", [(iso(now + lease), r[0]) for r in rows])
            rows += db.execute(
                f"SELECT {_ENTRY} FROM outbox WHERE id IN ({', '.join('?' * len(held))}) AND sent_at IS NULL "
                "ORDER BY created_at, id",
                held,
            ).fetchall()
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
