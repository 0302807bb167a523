"""The Table ledger's decisions: a record row and its trail rows in its id's shard, written in one
entity group transaction; a final record is never downgraded (conditional writes, read again on 412);
the trails read newest first, one RowKey range in each shard, merged."""

from __future__ import annotations

import heapq
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode

from function_app.adapters.azure_errors import translated
from function_app.adapters.table_entities import (
    CHANGED_MEANWHILE,
    DECISION_PARTITIONS,
    MAX_BATCH_CHARS,
    REMEMBERED,
    decision_partition,
    etag_of,
    get_body,
    prefix_range,
    put_body,
    record_key,
    trail_key,
    trail_prefix,
    trail_prefixes,
)
from function_app.adapters.table_outbox import TableOutbox
from handlers.errors import PermanentError, TransientError
from handlers.notify import notification_of
from handlers.records import DecisionRecord, iso, may_replace


class TableDecisions(TableOutbox):
    """The ``decisions`` table. A record that notifies puts its notification in the outbox
    (:class:`TableOutbox`) before it is written."""

    def put_decision(self, record: DecisionRecord, attempts: int = 8) -> DecisionRecord:
        """The record and its rows in the trail, in one transaction, keyed by the time the decision was
        first written: a rewrite (an outcome after 'reserved') keeps its one place in the trail. A
        record under the same id is replaced only as :func:`handlers.records.may_replace` allows, by
        an update conditional on the ETag read (If-Match), read again on 412; otherwise it is kept
        and returned. The first write inserts the record row, so it is one round trip; a rewrite, whose
        insert fails, pays a read and a second transaction. A record that notifies is read first, so
        that its notification goes into the outbox (before the record: sent at least once) only when
        the record will be written; the outcome of a reservation this ledger wrote is not read first:
        it is written on the ETag that write returned (another writer since: 412, read, as above)."""
        body = json.dumps(record.to_dict(), default=str)
        prefixes = trail_prefixes(record)
        if len(body) * (1 + len(prefixes)) > MAX_BATCH_CHARS:  # bounded records are far smaller: a bug
            raise PermanentError(f"record of {len(body)} characters is too large to write with its trail rows")
        with translated(f"writing decision {record.id}"):
            stored = self._written.pop(record.id, None)
            if stored is None and notification_of(record) is not None:
                stored = self._read_record(record.id)
            enqueued = False  # this call put the record's notification in the outbox
            for _ in range(attempts):
                if stored is None:
                    enqueued = self._enqueue(record) or enqueued
                    try:
                        done = self.decision_rows.submit_transaction(
                            self._decision_rows(record, body, record.at, prefixes, "create")
                        )
                    except TableTransactionError as exc:
                        if getattr(exc, "error_code", None) != "EntityAlreadyExists" or exc.index != 0:
                            raise
                    else:
                        self._remember(record, record.at, done)
                        return record
                    stored = self._read_record(record.id)
                    continue  # None: purged since the insert failed; insert again
                current, created, etag = stored
                if not may_replace(current, record):
                    if enqueued and notification_of(current) != notification_of(record):
                        self._dequeue(record)  # lost to another writer: no news of what was not recorded
                    return current
                enqueued = self._enqueue(record) or enqueued
                rows = self._decision_rows(record, body, created, prefixes, "update", etag)
                try:
                    done = self.decision_rows.submit_transaction(rows)
                except TableTransactionError as exc:
                    code = getattr(exc, "error_code", None)
                    if str(getattr(code, "value", code)) not in CHANGED_MEANWHILE or exc.index != 0:
                        raise
                else:
                    self._remember(record, created, done)
                    return record
                stored = self._read_record(record.id)
        raise TransientError(f"decision {record.id}: {attempts} concurrent writers in a row; retry later")

    def _read_record(self, decision_id: str) -> tuple[DecisionRecord, str, str] | None:
        """The record stored under ``decision_id``, the time it was first written and its ETag, or None."""
        try:
            entity = self.decision_rows.get_entity(decision_partition(decision_id), record_key(decision_id))
        except ResourceNotFoundError:
            return None
        return DecisionRecord.from_dict(json.loads(get_body(entity))), str(entity["created"]), etag_of(entity)

    def _remember(self, record: DecisionRecord, created: str, results: Sequence[Mapping[str, Any]]) -> None:
        """Keep the ETag a transaction gave the record row, for a rewrite by this worker (a ``reserved``
        record's outcome) without a read; a final record is not rewritten, so it is not kept."""
        etag = results[0].get("etag") if results else None
        if record.outcome != "reserved" or not etag:
            return
        if len(self._written) >= REMEMBERED:
            self._written.clear()
        self._written[record.id] = (record, created, str(etag))

    @staticmethod
    def _decision_rows(
        record: DecisionRecord, body: str, created: str, prefixes: list[str], first: str, etag: str | None = None
    ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """The operations that write ``record``: its record row (``first``: create, or an update
        conditional on ``etag``), then its trail rows (upserts: the same keys as any earlier write of
        the same decision)."""
        columns = {"PartitionKey": decision_partition(record.id), "model": record.model or ""}
        columns |= {"outcome": record.outcome, "at": record.at}
        columns |= {"created": created, "decision": record.id}
        replace: dict[str, Any] = {"mode": UpdateMode.REPLACE}
        rk = trail_key(created, record.id)
        condition: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        ops = [
            (
                first,
                put_body({**columns, "RowKey": record_key(record.id)}, body),
                replace | condition if first == "update" else {},
            )
        ]
        ops += [("upsert", put_body({**columns, "RowKey": prefix + rk}, body), replace) for prefix in prefixes]
        return ops

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        with translated(f"reading decision {decision_id}"):
            try:
                entity = self.decision_rows.get_entity(decision_partition(decision_id), record_key(decision_id))
            except ResourceNotFoundError:
                return None
        return DecisionRecord.from_dict(json.loads(get_body(entity)))

    def decisions(
        self,
        model: str | None = None,
        limit: int = 50,
        *,
        event_id: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
    ) -> list[DecisionRecord]:
        """Newest first, from one trail (the event's, the model's, or all): a RowKey range in each
        shard, filtered by the columns each trail row carries, merged by RowKey (inverted time)."""
        lo, hi = prefix_range(trail_prefix(event_id=event_id, model=model))
        query = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
        parameters: dict[str, Any] = {"lo": lo, "hi": hi}
        if model:  # the model's own trail, or a filter on the event's
            query, parameters["model"] = query + " and model eq @model", model
        if outcome:
            query, parameters["outcome"] = query + " and outcome eq @outcome", outcome
        if since is not None:
            query, parameters["since"] = query + " and created ge @since", iso(since)
        out: list[DecisionRecord] = []
        with translated("listing decisions"):
            shards = [
                self.decision_rows.query_entities(
                    query, parameters={**parameters, "pk": pk}, results_per_page=min(max(limit, 1), 1000)
                )
                for pk in DECISION_PARTITIONS
            ]
            for entity in heapq.merge(*shards, key=lambda e: str(e["RowKey"])):
                out.append(DecisionRecord.from_dict(json.loads(get_body(entity))))
                if len(out) >= limit:
                    break
        return out
