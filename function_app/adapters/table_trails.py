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
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from function_app.adapters.azure_errors import translated
from function_app.adapters.table_entities import (
    DECISION_PARTITIONS,
    NO_MODEL,
    REMEMBERED,
    decision_partition,
    get_body,
    model_partition,
    prefix_range,
    record_key,
    trail_prefix,
)
from function_app.adapters.table_outbox import TableOutbox
from handlers.records import DecisionRecord, iso


class TableTrails(TableOutbox):
    """Reads of records and trails (the writes: :class:`function_app.adapters.table_decisions.TableDecisions`)."""

    def _point(self, pk: str, rk: str) -> Any:
        try:
            return self.decision_rows.get_entity(pk, rk)
        except ResourceNotFoundError:
            return None

    def _old_record(self, decision_id: str) -> Any:
        """The record row of the layout before (its id's shard), or None. One found is remembered: a
        rewrite of it by this worker goes into its model's partition, and the old rows go."""
        entity = self._point(decision_partition(decision_id), record_key(decision_id))
        if entity is not None:
            if len(self._old) >= REMEMBERED:
                self._old.clear()
            self._old[decision_id] = (
                DecisionRecord.from_dict(json.loads(get_body(entity))),
                str(entity["created"]),
                "",
            )
        return entity

    def _where_put(self, decision_id: str, partition: str) -> None:
        """Remember the partition a record is in (the one a claim row names, or one written or read)."""
        if len(self._where) >= REMEMBERED * 4:
            self._where.clear()
        self._where[decision_id] = partition

    def get_decision(self, decision_id: str, model: str | None = None) -> DecisionRecord | None:
        """``model``: the model the decision concerns, when the caller knows it (one point read);
        without it, the partition this worker saw it in, the layout before, then every model's."""
        with translated(f"reading decision {decision_id}"):
            first = model_partition(model) if model is not None else self._where.get(decision_id)
            tried = set()
            if first is not None:
                tried.add(first)
                entity = self._point(first, record_key(decision_id))
                if entity is not None:
                    return DecisionRecord.from_dict(json.loads(get_body(entity)))
            old = self._old_record(decision_id)
            if old is not None:
                return DecisionRecord.from_dict(json.loads(get_body(old)))
            if model is not None:
                return None
            for pk in self._partitions():
                if pk in tried:
                    continue
                entity = self._point(pk, record_key(decision_id))
                if entity is not None:
                    self._where_put(decision_id, pk)
                    return DecisionRecord.from_dict(json.loads(get_body(entity)))
        return None

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
