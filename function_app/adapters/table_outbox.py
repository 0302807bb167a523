"""The Table ledger's outbox: one partition of notifications, each kept once (insert-if-absent),
claimed by a sender with an update conditional on the ETag it read, marked sent or failed."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode

from function_app.adapters.azure_errors import translated
from function_app.adapters.table_entities import (
    BATCH,
    OUTBOX,
    REMEMBERED,
    TableParts,
    etag_of,
    get_body,
    put_body,
    safe_key,
)
from handlers.notify import notification_of
from handlers.ports import Notification, OutboxEntry
from handlers.records import DecisionRecord, iso


def outbox_entry(entity: Any) -> OutboxEntry:
    attempts = entity.get("attempts")
    return OutboxEntry(
        Notification.from_dict(json.loads(get_body(entity))),
        attempts if isinstance(attempts, int) else 0,
        str(entity.get("due") or ""),
        str(entity.get("error") or ""),
        str(entity.get("sent") or ""),
        bool(entity.get("dead")),
    )


class TableOutbox(TableParts):
    """The ``outbox`` table: PartitionKey ``outbox``, RowKey the notification id."""

    def _enqueue(self, record: DecisionRecord) -> bool:
        """The record's notification into the outbox, unless it is there (pending or sent) already;
        whether this call put it there."""
        note = notification_of(record)
        if note is None:
            return False
        entity = {"PartitionKey": OUTBOX, "RowKey": safe_key(note.id), "created": note.time, "sent": ""}
        try:
            written = self.outbox.create_entity(put_body(entity, json.dumps(note.to_dict(), default=str)))
        except ResourceExistsError:
            return False
        if written and written.get("etag"):  # this worker's, to send as its delivery ends
            if len(self._own) >= REMEMBERED:
                self._own.clear()  # left to the reconciler's drain
            self._own[note.id] = (entity, str(written["etag"]))
        return True

    def _dequeue(self, record: DecisionRecord) -> None:
        """Take back the notification :meth:`_enqueue` put in the outbox for ``record``, if not sent yet."""
        note = notification_of(record)
        if note is None:
            return
        self._own.pop(note.id, None)
        with contextlib.suppress(ResourceNotFoundError):
            entity = self.outbox.get_entity(OUTBOX, safe_key(note.id), select=["sent"])
            if not entity.get("sent"):
                self.outbox.delete_entity(
                    OUTBOX, safe_key(note.id), etag=etag_of(entity), match_condition=MatchConditions.IfNotModified
                )

    def pending_notifications(self, limit: int) -> list[Notification]:
        out: list[Notification] = []
        with translated("reading pending notifications"):
            pages = self.outbox.query_entities(
                "PartitionKey eq @pk and sent eq ''", parameters={"pk": OUTBOX}, results_per_page=max(1, limit)
            )
            for entity in pages:
                out.append(Notification.from_dict(json.loads(get_body(entity))))
                if len(out) >= limit:
                    break
        return out

    def claim_notifications(self, limit: int, now: datetime, lease: timedelta) -> list[OutboxEntry]:
        """Each pending row due and unclaimed is claimed by an update conditional on the ETag read: of
        two senders that read it, one claims it (the other gets 412 and goes on to the next row). The
        rows read are claimed together (:meth:`_claimed`: one transaction)."""
        at, until = iso(now), iso(now + lease)
        claimed: list[Any] = []
        if limit < 1:
            return []
        with translated("claiming notifications to send"):
            pending = self.outbox.query_entities(
                "PartitionKey eq @pk and sent eq ''", parameters={"pk": OUTBOX}, results_per_page=100
            )
            due: list[tuple[Any, str]] = []
            for entity in pending:
                if str(entity.get("due") or "") > at or str(entity.get("lease") or "") > at:
                    continue  # backing off, or claimed by another sender
                due.append((entity, etag_of(entity)))
                if len(due) >= limit - len(claimed):  # enough to fill the claim, if none was taken meanwhile
                    claimed += self._claimed(due, until)
                    due = []
                    if len(claimed) >= limit:
                        break
            claimed += self._claimed(due, until)
        out = [outbox_entry(entity) for entity in claimed]
        for entry in out:
            self._own.pop(entry.id, None)  # claimed here: not this worker's to claim again
        return out

    def _claimed(self, rows: list[tuple[Any, str]], until: str) -> list[Any]:
        """``rows`` (each an entity and the ETag it was read or written with) claimed until ``until``,
        each by an update conditional on its ETag: up to a hundred in one transaction; when one of
        them changed since (another sender claimed or sent it, or it was purged), the transaction
        fails as a whole and each is tried alone. The entities claimed."""
        out: list[Any] = []
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            if len(chunk) > 1:
                try:
                    self.outbox.submit_transaction([_claim_op(entity, etag, until) for entity, etag in chunk])
                except TableTransactionError:
                    pass  # one changed since it was read: each alone
                else:
                    out += [entity for entity, _ in chunk]
                    continue
            for entity, etag in chunk:
                _, change, options = _claim_op(entity, etag, until)
                try:
                    self.outbox.update_entity(change, **options)
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue  # another sender claimed (or sent) it since it was read
                out.append(entity)
        return out

    def claim_own_notifications(self, limit: int, now: datetime, lease: timedelta) -> list[OutboxEntry]:
        """Each row this worker inserted, claimed by an update conditional on the ETag its insert
        returned (no query: a row changed since, claimed or sent by another, is left out); up to
        ``limit``, the rest kept for the next call."""
        mine = [held for held in (self._own.pop(i, None) for i in list(self._own)[: max(0, limit)]) if held]
        with translated("claiming the notifications this worker wrote"):
            return [outbox_entry(entity) for entity in self._claimed(mine, iso(now + lease))]

    def mark_notified(self, ids: Sequence[str], now: datetime) -> None:
        """A hundred in one transaction; when one was purged meanwhile (the transaction fails as a
        whole), each alone."""
        rows = [
            {"PartitionKey": OUTBOX, "RowKey": safe_key(note_id), "sent": iso(now), "lease": ""}
            for note_id in dict.fromkeys(ids)
        ]
        with translated("marking notifications sent"):
            for start in range(0, len(rows), BATCH):
                chunk = rows[start : start + BATCH]
                if len(chunk) > 1:
                    try:
                        self.outbox.submit_transaction([("update", row, {"mode": UpdateMode.MERGE}) for row in chunk])
                    except TableTransactionError:
                        pass  # one was purged since it was sent: each alone
                    else:
                        continue
                for row in chunk:
                    with contextlib.suppress(ResourceNotFoundError):
                        self.outbox.update_entity(row, mode=UpdateMode.MERGE)

    def fail_notification(
        self, note_id: str, now: datetime, attempts: int, error: str, retry_at: datetime | None
    ) -> None:
        change: dict[str, Any] = {"PartitionKey": OUTBOX, "RowKey": safe_key(note_id), "attempts": attempts}
        change.update(error=error, lease="")
        if retry_at is None:
            change.update(sent=iso(now), dead=iso(now))
        else:
            change.update(due=iso(retry_at))
        with translated("recording a failed notification"):
            for _ in range(5):
                try:
                    entity = self.outbox.get_entity(OUTBOX, safe_key(note_id))
                    if entity.get("sent"):
                        return  # sent (or given up on) meanwhile: that stands
                    self.outbox.update_entity(
                        change,
                        mode=UpdateMode.MERGE,
                        etag=etag_of(entity),
                        match_condition=MatchConditions.IfNotModified,
                    )
                except ResourceNotFoundError:
                    return  # purged
                except ResourceModifiedError:
                    continue  # changed since read: read it again
                return

    def notifications(self, dead: bool = False, limit: int = 50) -> list[OutboxEntry]:
        query = "PartitionKey eq @pk and " + ("dead gt ''" if dead else "sent eq ''")
        with translated("listing notifications"):
            entries = [outbox_entry(e) for e in self.outbox.query_entities(query, parameters={"pk": OUTBOX})]
        entries.sort(key=lambda e: (e.notification.time, e.id), reverse=True)
        return entries[:limit]


def _claim_op(entity: Any, etag: str, until: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The update that claims ``entity`` until ``until`` if it is still as ``etag`` says."""
    change = {"PartitionKey": OUTBOX, "RowKey": entity["RowKey"], "lease": until}
    return "update", change, {"mode": UpdateMode.MERGE, "etag": etag, "match_condition": MatchConditions.IfNotModified}
