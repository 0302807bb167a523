"""One claim path for every way in: claim -> run -> finish or abandon, and the Idempotency-Key binding.

An Event Grid event, an alert, a manual request and an operator request all go through
:meth:`Claims.run`: the trigger is claimed (:meth:`handlers.ports.Ledger.claim_event`, which binds an
Idempotency-Key to its request in the same write); a claim finished before answers with its records
(a duplicate); one another instance holds is a TransientError (asked again later); a key bound to
another request is KeyReused (422). Otherwise the work runs, and the claim is finished with its
records, or, on any error, given back (abandoned) so that a redelivery takes it at once; a claim
that cannot be given back expires with its lease.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from handlers.errors import TransientError
from handlers.idempotency import bound_to, check_binding, key_reused, legacy_records, same_request
from handlers.ports import Claim, Ledger
from handlers.records import DecisionRecord
from handlers.signals import Trigger

log = logging.getLogger(__name__)

# How long a claim (and a reservation) is held before another instance may take it over: a delivery is
# answered within Event Grid's 30 s, so a live worker is done with its claim well before it runs out.
LEASE = timedelta(seconds=60)

# The work done under a claim: given whether an earlier delivery took the claim and never finished
# it (``again``), the decisions to finish the claim with, and those of them not written yet.
Work = Callable[[bool], tuple[list[DecisionRecord], list[DecisionRecord]]]


@dataclass(frozen=True)
class Answer:
    """``processed`` (the work ran, ``records`` as the ledger holds them) or ``duplicate`` (finished
    before: its records, read back)."""

    status: str
    records: list[DecisionRecord]


class Claims:
    def __init__(self, ledger: Ledger, lease: timedelta = LEASE) -> None:
        self.ledger = ledger
        self.lease = lease

    def run(self, trigger: Trigger, now: datetime, work: Work, *, busy: str, signal: str | None = None) -> Answer:
        """Claim ``trigger`` and run ``work`` under the claim; ``busy``: the TransientError's message
        when another instance holds the claim; ``signal``: what the claim keeps for a replay
        (:mod:`handlers.recorded`). Raises what ``work`` raises, the claim given back."""
        claim = self.ledger.claim_event(trigger, now, self.lease, signal)
        if claim.status == "reused":  # an Idempotency-Key bound to another request: not its records
            raise key_reused(trigger, claim)
        if claim.status == "done":
            log.info("duplicate delivery event_id=%s type=%s: already decided", trigger.event_id, trigger.event_type)
            return Answer("duplicate", self.records(claim.decisions))
        if claim.status == "busy":
            raise TransientError(busy)
        try:
            records, unwritten = work(claim.status == "retry")
            kept = {r.id: r for r in self.ledger.finish_event(trigger, [r.id for r in records], now, unwritten)}
        except Exception:  # transient (or a bug): the claim is given back, the caller asks again
            self.abandon(trigger)
            raise
        return Answer("processed", [kept.get(r.id, r) for r in records])  # as the ledger holds them

    def records(self, ids: Iterable[str]) -> list[DecisionRecord]:
        found = [self.ledger.get_decision(d) for d in ids]
        return [d for d in found if d is not None]

    def abandon(self, trigger: Trigger) -> None:
        try:
            self.ledger.abandon_event(trigger)
        except TransientError:
            log.warning("could not release the claim on event_id=%s; it expires with its lease", trigger.event_id)

    # ------------------------------------------------------------------ answers before a claim

    def legacy(self, trigger: Trigger) -> list[DecisionRecord] | None:
        """The records of a request whose key was claimed before claims had channels
        (:func:`handlers.idempotency.legacy_records`)."""
        return legacy_records(self.ledger, trigger)

    def answered(self, trigger: Trigger) -> DecisionRecord | None:
        """The record of this request when it was carried out before (the same Idempotency-Key):
        the same record again, unless the key is bound to another request (KeyReused)."""
        before = self.legacy(trigger)
        if before:
            return before[0]
        # one read for the binding and the answer: a binding checked on one read and the decisions
        # taken from a later one answered a request with the record of another that claimed the key
        # in between (a pause racing a retrain under one key got the retrain's record)
        claim = self.ledger.event_claim(trigger)
        if claim is None:
            return None
        if trigger.request is not None and not same_request(claim.request, trigger.request):
            raise key_reused(trigger, claim)
        if claim.status != "done" or not claim.decisions:
            return None
        return self.ledger.get_decision(claim.decisions[0])

    def bound_among(self, trigger: Trigger, records: Sequence[DecisionRecord]) -> DecisionRecord | None:
        """The one of ``records`` that answers this very request although its claim was never
        finished (its worker died after the record was written and someone else finished the work);
        KeyReused when the key's claim, or that record, is bound to another request."""
        check_binding(self.ledger, trigger)
        for record in records:
            if bound_to(record, trigger):
                stored = record.trigger.get("request")
                if not same_request(stored, trigger.request):
                    claim = Claim("done", (record.id,), record.at, str(record.trigger.get("event_type")), stored)
                    raise key_reused(trigger, claim)
                return record
        return None
