"""The Table ledger's reads of decisions: a record by its id (in its model's partition when the model
is known, else where this worker last saw it, else in the shards of the layout before, else in each
model's partition), and the trails, newest first: one RowKey range in each partition read (the
model's own; or every model's, and ``-``, for all decisions and an event's), merged with the same
range in the shards ``d0`` .. ``d7`` of the layout before, a decision found in both read once."""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from datetime import datetime
from itertools import chain
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from function_app.adapters.azure_errors import translated
from function_app.adapters.table_entities import (
    DECISION_PARTITIONS,
    NO_MODEL,
    RECORD,
    REMEMBERED,
    Stored,
    decision_partition,
    etag_of,
    get_body,
    model_partition,
    prefix_range,
    record_key,
    trail_prefix,
)
from function_app.adapters.table_outbox import TableOutbox
from handlers.records import DecisionRecord, iso, refused


class TableTrails(TableOutbox):
    """Reads of records and trails (the writes: :class:`function_app.adapters.table_decisions.TableDecisions`)."""

    def _point(self, pk: str, rk: str) -> Any:
        try:
            return self.decision_rows.get_entity(pk, rk)
        except ResourceNotFoundError:
            return None

    def _stored(self, decision_id: str, pk: str) -> Stored | None:
        """The record stored under ``decision_id`` in partition ``pk``, or None. One found is remembered
        as stored: a rewrite of it by this worker is conditional on its ETag (in place, or moving it
        from its shard to its model's partition)."""
        entity = self._point(pk, record_key(decision_id))
        if entity is None:
            return None
        found = Stored(
            DecisionRecord.from_dict(json.loads(get_body(entity))), str(entity["created"]), etag_of(entity), pk
        )
        if len(self._seen) >= REMEMBERED:
            self._seen.clear()
        self._seen[decision_id] = found
        self._where_put(decision_id, pk)
        return found

    def _where_put(self, decision_id: str, partition: str) -> None:
        """Remember the partition a record is in (the one a claim row names, or one written or read)."""
        if len(self._where) >= REMEMBERED * 4:
            self._where.clear()
        self._where[decision_id] = partition

    def get_decision(self, decision_id: str, model: str | None = None) -> DecisionRecord | None:
        """``model``: the model the decision concerns, when the caller knows it. Looked for where this
        worker saw it last, then in the model's partition, then in its id's shard (a guard's refusal,
        or the layout before); without a model, then in every model's partition. A refusal found in
        its shard whose model's partition holds the decision too (a reservation that took its place,
        written by a worker that had not read it) gives way to that record."""
        shard = decision_partition(decision_id)
        own = model_partition(model) if model is not None else None
        places = list(dict.fromkeys(p for p in (self._where.get(decision_id), own, shard) if p is not None))
        with translated(f"reading decision {decision_id}"):
            tried: set[str] = set()
            for pk in chain(places, () if model is not None else self._other_partitions(places)):
                tried.add(pk)
                found = self._stored(decision_id, pk)
                if found is None:
                    continue
                later = model_partition(found.record.model)
                if pk == shard and found.record.model and later not in tried:
                    found = self._stored(decision_id, later) or found
                return found.record
        return None

    def _other_partitions(self, tried: list[str]) -> Iterator[str]:
        """Every model's partition not in ``tried``, the directory read only when asked for one."""
        yield from (pk for pk in self._partitions() if pk not in tried)

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
        partition (and shard of the layout before), filtered by the columns each trail row carries,
        merged by the time in the RowKey (inverted)."""
        filters, parameters = "", {}
        if outcome:
            filters, parameters["outcome"] = filters + " and outcome eq @outcome", outcome
        if since is not None:
            filters, parameters["since"] = filters + " and created ge @since", iso(since)
        new_prefix = trail_prefix(event_id=event_id)  # a: or e:<digest>: within the partitions
        old_prefix = trail_prefix(event_id=event_id, model=model)  # the shards' own trails
        old_filters = filters + (" and model eq @model" if model else "")
        page = min(max(limit, 1), 1000)
        out: list[DecisionRecord] = []
        seen: set[str] = set()
        with translated("listing decisions"):
            partitions = [model_partition(model)] if model else self._partitions()
            reads = [self._trail(pk, new_prefix, filters, parameters, page) for pk in partitions]
            reads += [
                self._trail(pk, old_prefix, old_filters, {**parameters, "model": model or ""}, page)
                for pk in DECISION_PARTITIONS
            ]
            for _, entity in heapq.merge(*reads, key=lambda item: item[0]):
                decision = str(entity.get("decision") or "")
                if decision in seen:  # a record rewritten in its model's partition over one of the layout before
                    continue
                seen.add(decision)
                out.append(DecisionRecord.from_dict(json.loads(get_body(entity))))
                if len(out) >= limit:
                    break
        return out

    def model_history(self, model: str) -> list[DecisionRecord]:
        """The record rows of the model's partition, one query (its guards' refusals that notify
        nobody are in their shards, not there), newest first. For a model of the layout before (its
        directory row has a body; or this worker has not seen it listed without one), also the
        model's trail in each shard of that layout (its refusals of that layout read with it, and
        left out, until the retention purges them)."""
        lo, hi = prefix_range(RECORD)
        found: dict[str, tuple[str, DecisionRecord]] = {}
        with translated(f"reading the decisions of model {model}"):
            query = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
            params = {"pk": model_partition(model), "lo": lo, "hi": hi}
            rows = list(self.decision_rows.query_entities(query, parameters=params, results_per_page=1000))
            if model not in self._native:  # its refusals read too, until the retention purges them
                prefix = trail_prefix(model=model)
                for pk in DECISION_PARTITIONS:
                    rows += [e for _, e in self._trail(pk, prefix, "", {}, 1000)]
            for entity in rows:  # a record rewritten in the partition over its shard's is read there
                record = DecisionRecord.from_dict(json.loads(get_body(entity)))
                found.setdefault(record.id, (str(entity.get("created") or ""), record))
        ordered = sorted(found.values(), key=lambda item: (item[0], item[1].id), reverse=True)
        return [record for _, record in ordered if not refused(record)]

    def _trail(
        self, pk: str, prefix: str, filters: str, parameters: dict[str, Any], page: int
    ) -> Iterator[tuple[str, Any]]:
        """One partition's range of a trail, newest first, each row with its key in time (the RowKey
        after the prefix); a lazy query (read as the merge needs it)."""
        lo, hi = prefix_range(prefix)
        query = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi" + filters
        params = {**parameters, "pk": pk, "lo": lo, "hi": hi}
        if "@model" not in query:
            params.pop("model", None)
        for entity in self.decision_rows.query_entities(query, parameters=params, results_per_page=page):
            yield str(entity["RowKey"])[len(prefix) :], entity

    def _partitions(self) -> list[str]:
        """Every model's partition (the directory: one request) and ``-`` (decisions of no model)."""
        return [model_partition(name) for name, _ in self._directory()] + [NO_MODEL]
