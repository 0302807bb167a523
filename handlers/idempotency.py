"""Idempotency-Keys of the HTTP API: one key, one request.

A request's claim (:meth:`handlers.ports.Ledger.claim_event`, under :func:`handlers.signals.claim_key`)
binds its key to the request's digest (route, model, body) in the same atomic write that creates
the claim; a request that finds the key bound to another digest is refused (:class:`KeyReused`, 422)
and never answered with the other request's record. Every path that answers from a stored record
checks that binding first (:func:`check_binding`).

Keys recorded before claims had channels (the key was a digest of ``http``, the route and
``model:key``) are still found: :func:`legacy_records` reads the old claim, and answers only from the
records a request of the API wrote (they carry the request digest; an event posted to the webhook
with topic ``http`` never does).
"""

from __future__ import annotations

from dataclasses import replace

from handlers.errors import KeyReused
from handlers.ports import Claim, Ledger
from handlers.records import DecisionRecord
from handlers.signals import EVENT_GRID, MANUAL, OPERATOR, Trigger


def key_reused(trigger: Trigger, claim: Claim) -> KeyReused:
    """The 422 for ``trigger``'s key, whose ``claim`` is bound to another request."""
    model, _, key = trigger.event_id.partition(":")
    route = claim.first_for.rpartition(".")[2] or "another route"
    ours = trigger.event_type.rpartition(".")[2]
    what = f"POST /api/models/{model}/{route}" + (" with another body" if route == ours else "")
    decided = f", decision {', '.join(claim.decisions)}" if claim.decisions else ", still being carried out"
    return KeyReused(
        f"Idempotency-Key {key!r} was first used at {claim.first_used or 'an earlier time'} for another request "
        f"({what}{decided}); a key stands for one request: send a new key with a new request"
    )


def check_binding(ledger: Ledger, trigger: Trigger) -> None:
    """Raise KeyReused when ``trigger``'s key is claimed for another request than ``trigger.request``."""
    if trigger.request is None:
        return
    claim = ledger.event_claim(trigger)
    if claim is not None and claim.request != trigger.request:
        raise key_reused(trigger, claim)


def bound_to(record: DecisionRecord, trigger: Trigger) -> bool:
    """Whether ``record`` answers this very request: same key and same request digest (a record
    without a digest was not written by the API for a request: an event's, whatever it says)."""
    return (
        record.trigger.get("event_id") == trigger.event_id
        and record.trigger.get("source") == trigger.source
        and record.trigger.get("request") is not None
        and record.trigger.get("channel", trigger.channel) == trigger.channel
    )


def legacy_records(ledger: Ledger, trigger: Trigger) -> list[DecisionRecord] | None:
    """The records of this request when its key was claimed in the format of before claim channels
    (finished): the answer to a retry sent across the upgrade. KeyReused when they answer another
    request; None when there is no such claim, or it holds no record the API wrote."""
    if trigger.channel not in (MANUAL, OPERATOR) or trigger.request is None:
        return None
    seen = ledger.event_status(replace(trigger, channel=EVENT_GRID))
    if not seen or seen[0] != "done":
        return None
    found = [ledger.get_decision(d) for d in seen[1]]
    records = [r for r in found if r is not None and bound_to(r, trigger)]
    if not records:
        return None
    if records[0].trigger.get("request") != trigger.request:
        raise key_reused(trigger, Claim("done", tuple(r.id for r in records), records[0].at, trigger.event_type))
    return records
