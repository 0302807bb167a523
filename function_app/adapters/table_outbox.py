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
from azure.data.tables import UpdateMode

from function_app.adapters.azure_errors import translated
from function_app.adapters.table_entities import OUTBOX, REMEMBERED, TableParts, etag_of, get_body, put_body, safe_key
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
        two senders that read it, one claims it (the other gets 412 and goes on to the next row)."""
        at, until = iso(now), iso(now + lease)
        out: list[OutboxEntry] = []
        if limit < 1:
            return out
        with translated("claiming notifications to send"):
            pending = self.outbox.query_entities(
                "PartitionKey eq @pk and sent eq ''", parameters={"pk": OUTBOX}, results_per_page=100
            )
            for entity in pending:
                if str(entity.get("due") or "") > at or str(entity.get("lease") or "") > at:
                    continue  # backing off, or claimed by another sender
                try:
                    self.outbox.update_entity(
                        {"PartitionKey": OUTBOX, "RowKey": entity["RowKey"], "lease": until},
                        mode=UpdateMode.MERGE,
                        etag=etag_of(entity),
                        match_condition=MatchConditions.IfNotModified,
                    )
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue  # another sender claimed (or sent) it since it was read
                out.append(outbox_entry(entity))
                self._own.pop(out[-1].id, None)  # claimed here: not this worker's to claim again
                if len(out) >= limit:
                    break
        return out

    def claim_own_notifications(self, limit: int, now: datetime, lease: timedelta) -> list[OutboxEntry]:
        """Each row this worker inserted, claimed by an update conditional on the ETag its insert
        returned (no query: a row changed since, claimed or sent by another, is left out); up to
        ``limit``, the rest kept for the next call."""
        until = iso(now + lease)
        out: list[OutboxEntry] = []
        with translated("claiming the notifications this worker wrote"):
            for note_id in list(self._own)[: max(0, limit)]:
                held = self._own.pop(note_id, None)
                if held is None:
                    continue  # taken by another thread of this worker
                entity, etag = held
                try:
                    self.outbox.update_entity(
                        {"PartitionKey": OUTBOX, "RowKey": entity["RowKey"], "lease": until},
                        mode=UpdateMode.MERGE,
                        etag=etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue  # another sender claimed (or sent) it, or it was purged
                out.append(outbox_entry(entity))
        return out

    def mark_notified(self, ids: Sequence[str], now: datetime) -> None:
        with translated("marking notifications sent"):
            for note_id in ids:
                with contextlib.suppress(ResourceNotFoundError):
                    self.outbox.update_entity(
                        {"PartitionKey": OUTBOX, "RowKey": safe_key(note_id), "sent": iso(now), "lease": ""},
                        mode=UpdateMode.MERGE,
                    )

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
