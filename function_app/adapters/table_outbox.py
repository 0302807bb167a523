"""The Table ledger's outbox: a decision's notification is a row (``o:<notification id>``) in its
decision's partition of the decisions table, inserted in the transaction that writes the record
(kept once: insert-if-absent), claimed by a sender with an update conditional on the ETag it read,
marked sent or failed. A worker that sends what it writes (:meth:`TableOutbox.sends_own`) inserts it
claimed by itself for a lease. The ``outbox`` partition of the layout before is drained until empty."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from function_app.adapters.azure_errors import translated
from function_app.adapters.table_entities import (
    BATCH,
    NO_MODEL,
    NOTE,
    OUTBOX,
    etag_of,
    get_body,
    model_partition,
    note_key,
    prefix_range,
    safe_key,
)
from function_app.adapters.table_models import SURVEY_FRESH, TableModels
from handlers.ports import Notification, OutboxEntry
from handlers.records import iso

Row = tuple[Any, str]  # an outbox entity and the ETag it was read or written with


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


class TableOutbox(TableModels):
    """Outbox rows in the decisions' partitions (and the ``outbox`` table's one partition of the
    layout before)."""

    def sends_own(self, lease: timedelta) -> None:
        self._send_lease = lease

    def _table_of(self, pk: str) -> TableClient:
        return self.outbox if pk == OUTBOX else self.decision_rows

    def _note_id(self, entity: Any) -> str:
        return str(entity.get("note") or Notification.from_dict(json.loads(get_body(entity))).id)

    def _pending(self, *, survey: bool = False) -> list[Any]:
        """Every pending outbox row: one query of each model's partition (or what the reconciler's
        survey found in them, taken once: ``survey``), of ``-`` and of the layout before's."""
        lo, hi = prefix_range(NOTE)
        found: list[Any] = []
        taken, self._survey = self._survey, None
        if survey and taken is not None and time.monotonic() - taken[0] <= SURVEY_FRESH:
            surveyed = taken[1]
            partitions = [NO_MODEL]
            found += [row for rows in surveyed.values() for row in rows]
        else:
            partitions = [model_partition(name) for name, _ in self._directory()] + [NO_MODEL]
        query = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi and sent eq ''"
        for pk in partitions:
            found += list(self.decision_rows.query_entities(query, parameters={"pk": pk, "lo": lo, "hi": hi}))
        found += list(self.outbox.query_entities("PartitionKey eq @pk and sent eq ''", parameters={"pk": OUTBOX}))
        for entity in found:
            self._notes[self._note_id(entity)] = str(entity["PartitionKey"])
        return found

    def pending_notifications(self, limit: int) -> list[Notification]:
        with translated("reading pending notifications"):
            rows = self._pending()
        rows.sort(key=lambda e: (str(e.get("created") or ""), str(e["RowKey"])))
        return [Notification.from_dict(json.loads(get_body(e))) for e in rows[: max(0, limit)]]

    def claim_notifications(self, limit: int, now: datetime, lease: timedelta) -> list[OutboxEntry]:
        """Each pending row due and unclaimed is claimed by an update conditional on the ETag read: of
        two senders that read it, one claims it (the other gets 412 and goes on to the next row). The
        rows of one partition are claimed together (:meth:`_claimed`: one transaction)."""
        at, until = iso(now), iso(now + lease)
        if limit < 1:
            return []
        with translated("claiming notifications to send"):
            due = [
                (e, etag_of(e))
                for e in self._pending(survey=True)
                if str(e.get("due") or "") <= at and str(e.get("lease") or "") <= at
            ]
            due.sort(key=lambda row: (str(row[0].get("created") or ""), str(row[0]["RowKey"])))
            claimed = self._claimed(due[:limit], until)
        out = [outbox_entry(entity) for entity in claimed]
        for entry in out:
            self._own.pop(entry.id, None)  # claimed here: not this worker's to claim again
        return out

    def _claimed(self, rows: list[Row], until: str) -> list[Any]:
        """``rows`` claimed until ``until``, each by an update conditional on its ETag: those of one
        partition up to a hundred in one transaction; when one of them changed since (another
        sender claimed or sent it, or it was purged), the transaction fails as a whole and each is
        tried alone. The entities claimed."""
        out: list[Any] = []
        by_partition: dict[str, list[Row]] = {}
        for entity, etag in rows:
            by_partition.setdefault(str(entity["PartitionKey"]), []).append((entity, etag))
        for pk, mine in by_partition.items():
            table = self._table_of(pk)
            for start in range(0, len(mine), BATCH):
                chunk = mine[start : start + BATCH]
                if len(chunk) > 1:
                    try:
                        table.submit_transaction([_claim_op(entity, etag, until) for entity, etag in chunk])
                    except TableTransactionError:
                        pass  # one changed since it was read: each alone
                    else:
                        out += [entity for entity, _ in chunk]
                        continue
                for entity, etag in chunk:
                    _, change, options = _claim_op(entity, etag, until)
                    try:
                        table.update_entity(change, **options)
                    except (ResourceModifiedError, ResourceNotFoundError):
                        continue  # another sender claimed (or sent) it since it was read
                    out.append(entity)
        for entity in out:
            self._notes[self._note_id(entity)] = str(entity["PartitionKey"])
        return out

    def claim_own_notifications(self, limit: int, now: datetime, lease: timedelta) -> list[OutboxEntry]:
        """Each row this worker inserted: one it inserted claimed for itself is its own without a
        request while at least half of ``lease`` of that claim is left; any other is claimed by an
        update conditional on the ETag its insert returned (no query: a row changed since, claimed
        or sent by another, is left out); up to ``limit``, the rest kept for the next call."""
        mine = [held for held in (self._own.pop(i, None) for i in list(self._own)[: max(0, limit)]) if held]
        held = [entity for entity, _ in mine if str(entity.get("lease") or "") >= iso(now + lease / 2)]
        claim = [(entity, etag) for entity, etag in mine if str(entity.get("lease") or "") < iso(now + lease / 2)]
        with translated("claiming the notifications this worker wrote"):
            claimed = self._claimed(claim, iso(now + lease)) if claim else []
        for entity in held:
            self._notes[self._note_id(entity)] = str(entity["PartitionKey"])
        return [outbox_entry(entity) for entity in held + claimed]

    def _places(self, ids: Sequence[str]) -> dict[str, list[str]]:
        """The partition of each notification of ``ids``, as this worker saw it, else found (the
        outbox rows pending in every partition); those found nowhere are left out."""
        if any(i not in self._notes for i in ids):
            self._pending()
        places: dict[str, list[str]] = {}
        for note_id in dict.fromkeys(ids):
            if note_id in self._notes:
                places.setdefault(self._notes[note_id], []).append(note_id)
        return places

    def mark_notified(self, ids: Sequence[str], now: datetime) -> None:
        """A hundred of one partition in one transaction; when one was purged meanwhile (the
        transaction fails as a whole), each alone."""
        with translated("marking notifications sent"):
            for pk, note_ids in self._places(ids).items():
                table = self._table_of(pk)
                rows = [
                    {"PartitionKey": pk, "RowKey": _row_key(pk, i), "sent": iso(now), "lease": ""} for i in note_ids
                ]
                for start in range(0, len(rows), BATCH):
                    chunk = rows[start : start + BATCH]
                    if len(chunk) > 1:
                        try:
                            table.submit_transaction([("update", row, {"mode": UpdateMode.MERGE}) for row in chunk])
                        except TableTransactionError:
                            pass  # one was purged since it was sent: each alone
                        else:
                            continue
                    for row in chunk:
                        with contextlib.suppress(ResourceNotFoundError):
                            table.update_entity(row, mode=UpdateMode.MERGE)

    def fail_notification(
        self, note_id: str, now: datetime, attempts: int, error: str, retry_at: datetime | None
    ) -> None:
        with translated("recording a failed notification"):
            for pk in self._places([note_id]):
                table, rk = self._table_of(pk), _row_key(pk, note_id)
                change: dict[str, Any] = {"PartitionKey": pk, "RowKey": rk, "attempts": attempts}
                change.update(error=error, lease="")
                if retry_at is None:
                    change.update(sent=iso(now), dead=iso(now))
                else:
                    change.update(due=iso(retry_at))
                for _ in range(5):
                    try:
                        entity = table.get_entity(pk, rk)
                        if entity.get("sent"):
                            return  # sent (or given up on) meanwhile: that stands
                        table.update_entity(
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
        lo, hi = prefix_range(NOTE)
        which = "dead gt ''" if dead else "sent eq ''"
        with translated("listing notifications"):
            rows = list(self.outbox.query_entities(f"PartitionKey eq @pk and {which}", parameters={"pk": OUTBOX}))
            for pk in [model_partition(name) for name, _ in self._directory()] + [NO_MODEL]:
                rows += self.decision_rows.query_entities(
                    f"PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi and {which}",
                    parameters={"pk": pk, "lo": lo, "hi": hi},
                )
        entries = [outbox_entry(e) for e in rows]
        entries.sort(key=lambda e: (e.notification.time, e.id), reverse=True)
        return entries[:limit]


def _row_key(pk: str, note_id: str) -> str:
    return safe_key(note_id) if pk == OUTBOX else note_key(note_id)


def _claim_op(entity: Any, etag: str, until: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The update that claims ``entity`` until ``until`` if it is still as ``etag`` says."""
    change = {"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"], "lease": until}
    return "update", change, {"mode": UpdateMode.MERGE, "etag": etag, "match_condition": MatchConditions.IfNotModified}
