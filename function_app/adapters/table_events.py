"""The Table ledger's events: an event is claimed by inserting its entity (insert-if-absent), an
expired claim taken over by an update conditional on its ETag, and finished (``done``, with its
decision ids) after the records it answers with are written."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from function_app.adapters.azure_errors import translated
from function_app.adapters.table_decisions import TableDecisions
from function_app.adapters.table_entities import REMEMBERED, etag_of
from handlers.idempotency import same_request
from handlers.plans import decision_id
from handlers.ports import Claim
from handlers.recorded import RecordedEvent
from handlers.records import DecisionRecord, cut, iso
from handlers.signals import EVENT_GRID, Trigger, claim_key


def claim_of(entity: Mapping[str, Any]) -> Claim:
    """An event entity as the claim it stores."""
    return Claim(
        str(entity.get("status") or ""),
        tuple(json.loads(entity.get("decisions") or "[]")),
        str(entity.get("received_at") or ""),
        str(entity.get("event_type") or ""),
        entity.get("request") or None,
    )


class TableEvents(TableDecisions):
    """The ``events`` table: one entity per claim key (PartitionKey), RowKey ``""``. Finishing an
    event writes its unwritten records first (:class:`TableDecisions`), then marks it done."""

    def claim_event(self, trigger: Trigger, now: datetime, lease: timedelta, signal: str | None = None) -> Claim:
        key, until = claim_key(trigger), iso(now + lease)
        entity = {
            "PartitionKey": key,
            "RowKey": "",
            # informational copies (the key is a digest of the whole): cut to fit a string property
            "source": cut(trigger.source),
            "event_id": cut(trigger.event_id),
            "event_type": cut(trigger.event_type),
            "status": "processing",
            "lease_until": until,
            "decisions": "[]",
            "received_at": iso(now),
            # the request the key is bound to, inserted with the claim: of two requests racing for a
            # key, the one whose insert got 409 reads the winner's binding
            "request": trigger.request or "",
            # the signal, for a replay (retrain backtest): within a string property (MAX_SIGNAL)
            "signal": signal or "",
        }
        self._fresh.pop(key, None)
        with translated(f"claiming event {trigger.event_id}"):
            for attempt in range(3):  # the entity can vanish between the 409 and the read (purged)
                try:
                    self.events.create_entity(entity)
                    if attempt == 0 and trigger.channel == EVENT_GRID:  # never claimed before (nor purged)
                        if len(self._fresh) >= REMEMBERED:
                            self._fresh.clear()
                        half = lease.total_seconds() / 2
                        self._fresh[key] = (self.monotonic() + half, self.wall() + half)
                    return Claim("new")
                except ResourceExistsError:
                    pass
                try:
                    existing = self.events.get_entity(key, "")
                except ResourceNotFoundError:
                    continue
                # another request's key: never taken over, never answered from (one bound before keys were bound
                # to callers is this request's when the rest of its digest is: taken over after its lease, as any)
                if not same_request(existing.get("request") or None, trigger.request):
                    return replace(claim_of(existing), status="reused")
                if existing.get("status") == "done":
                    self._places_of(existing)
                    return Claim("done", tuple(json.loads(existing.get("decisions") or "[]")))
                lease_until = existing.get("lease_until") or ""
                if lease_until and lease_until > iso(now):
                    return Claim("busy")
                try:  # take over the expired claim, unless another instance just did
                    self.events.update_entity(
                        {"PartitionKey": key, "RowKey": "", "lease_until": until},
                        mode=UpdateMode.MERGE,
                        etag=etag_of(existing),
                        match_condition=MatchConditions.IfNotModified,
                    )
                    return Claim("retry")
                except (ResourceModifiedError, ResourceNotFoundError):
                    return Claim("busy")
        return Claim("busy")

    def abandon_event(self, trigger: Trigger) -> None:
        key = claim_key(trigger)
        self._fresh.pop(key, None)
        with translated(f"releasing the claim on event {trigger.event_id}"):
            try:
                existing = self.events.get_entity(key, "")
                if existing.get("status") != "processing":
                    return
                self.events.update_entity(
                    {"PartitionKey": key, "RowKey": "", "lease_until": ""},
                    mode=UpdateMode.MERGE,
                    etag=etag_of(existing),
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                pass  # someone else took or finished it: nothing of ours to release

    def finish_event(
        self, trigger: Trigger, decision_ids: Sequence[str], now: datetime, records: Sequence[DecisionRecord] = ()
    ) -> list[DecisionRecord]:
        unheard = self._unheard_of(trigger, records)
        # first the records, then "done"
        stored = [self._put_unheard(r) if r.id in unheard else self.put_decision(r) for r in records]
        # where each decision is (its model's partition), for a redelivery's answer without a search
        where = {d: self._where[d] for d in decision_ids if d in self._where}
        with translated(f"finishing event {trigger.event_id}"):
            self.events.upsert_entity(
                {
                    "PartitionKey": claim_key(trigger),
                    "RowKey": "",
                    "status": "done",
                    "lease_until": "",
                    "decisions": json.dumps(list(decision_ids)),
                    "partitions": json.dumps(where),
                    "finished_at": iso(now),
                },
                mode=UpdateMode.MERGE,
            )
        return stored

    def _unheard_of(self, trigger: Trigger, records: Sequence[DecisionRecord]) -> set[str]:
        """The ids among ``records`` under which nothing is stored anywhere, so that writing them
        reads nothing first (a guard's refusal, most of a storm, would read its model's partition
        for a record of its id that stands). Those of an Event Grid event this worker claimed with
        its first insert (no claim of that event was there: it was never decided before, nor
        purged between a 409 and the read) and holds still, within half its lease by both this
        worker's own clocks (no other instance can have taken it over since, even with a clock ahead by up to
        the other half), whose id derives from that event alone (:func:`handlers.plans.decision_id`
        of its action, model and trigger: a run's or a registry version's keyed decision does not,
        and no other way in makes an id of a workspace's event), and that this worker has neither
        written nor read: only the worker of that claim decides under such an id. (An event claimed
        again after the retention purged its finished claim is new again, as its decisions, purged
        with it; Event Grid retries for at most 24 hours, far within any retention.)"""
        until = self._fresh.pop(claim_key(trigger), None)
        # on both clocks: a paused virtual machine's monotonic clock may not count the pause, and a
        # wall clock can be set back; either one past half the lease may mean the claim was taken over
        if until is None or self.monotonic() >= until[0] or self.wall() >= until[1]:
            return set()
        return {
            r.id
            for r in records
            if r.id not in self._where
            and r.id not in self._written
            and r.id not in self._seen
            and r.id == decision_id(r.action, r.model, trigger)
        }

    def event_claim(self, trigger: Trigger) -> Claim | None:
        with translated(f"reading event {trigger.event_id}"):
            try:
                entity = self.events.get_entity(claim_key(trigger), "")
            except ResourceNotFoundError:
                return None
        self._places_of(entity)
        return claim_of(entity)

    def _places_of(self, entity: Mapping[str, Any]) -> None:
        """Remember where the decisions a finished claim names are (their partitions)."""
        for decision, partition in json.loads(entity.get("partitions") or "{}").items():
            self._where_put(str(decision), str(partition))

    def recorded_events(self, since: datetime, limit: int) -> list[RecordedEvent]:
        """A scan of the table (claim keys are digests: arrival is no key), filtered by the service."""
        found = []
        with translated("reading the recorded events"):
            for e in self.events.query_entities(
                "received_at ge @since",
                parameters={"since": iso(since)},
                select=[
                    "PartitionKey",
                    "source",
                    "event_id",
                    "event_type",
                    "received_at",
                    "status",
                    "decisions",
                    "signal",
                ],
            ):
                found.append((str(e.get("received_at") or ""), str(e["PartitionKey"]), e))
        found.sort(key=lambda item: item[:2])
        return [
            RecordedEvent(
                str(e.get("source") or ""),
                str(e.get("event_id") or ""),
                str(e.get("event_type") or ""),
                at,
                str(e.get("status") or ""),
                tuple(json.loads(e.get("decisions") or "[]")),
                e.get("signal") or None,
            )
            for at, _, e in found[:limit]
        ]

    def event_status(self, trigger: Trigger) -> tuple[str, list[str]] | None:
        with translated(f"reading event {trigger.event_id}"):
            try:
                entity = self.events.get_entity(claim_key(trigger), "", select=["status", "decisions", "partitions"])
            except ResourceNotFoundError:
                return None
        self._places_of(entity)
        return str(entity["status"]), list(json.loads(entity.get("decisions") or "[]"))
