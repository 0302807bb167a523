"""Idempotency-Keys of the HTTP API: one key, one request.

A request's claim (:meth:`handlers.ports.Ledger.claim_event`, under :func:`handlers.signals.claim_key`)
binds its key to the request's digest (route, model, body) in the same atomic write that creates
the claim; a request that finds the key bound to another digest is refused (:class:`KeyReused`, 422)
and never answered with the other request's record. Every path that answers from a stored record
checks that binding first (:func:`check_binding`).

A key is bound to its caller too (:func:`bound_request`: the digest carries who sent it, as the approvals
tell people apart: a signed-in principal's object id, the command line's login name; every function key
holder is one caller, "function key", as nobody can tell them apart). Another caller who sends the key,
with the same body or not, is refused with a message that names nothing of the first request (its route,
time, decision or body): a key someone saw in a log is no way to read, or to take, another's request.
Keys bound before callers were (a digest without its caller part) still answer a retry of the same request, and the
ledgers take such a key's claim, left unfinished by a worker that died, over once its lease runs out, as any claim
(:func:`same_request` is how they compare a key's binding).

Keys recorded before claims had channels (the key was a digest of ``http``, the route and
``model:key``) are still found: :func:`legacy_records` reads the old claim, and answers only from the
records a request of the API wrote (they carry the request digest; an event posted to the webhook
with topic ``http`` never does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from handlers.approval_rules import identity
from handlers.errors import KeyReused
from handlers.keys import digest
from handlers.ports import Claim, Ledger
from handlers.records import DecisionRecord
from handlers.signals import EVENT_GRID, MANUAL, OPERATOR, Trigger


def bound_request(request: str, caller: Mapping[str, Any]) -> str:
    """What a key is bound to: the request's digest (route, model, body) and, after a dot, a digest of who
    sent it (:func:`handlers.approval_rules.identity`; every function key holder is one caller)."""
    return f"{request}.{digest('caller', identity(caller) or 'function key')}"


def same_request(stored: str | None, ours: str | None) -> bool:
    """Whether the request a key is bound to (``stored``) is this one (``ours``): the same digest, or a
    digest bound before keys were bound to callers (no caller part) that is this request's."""
    return stored == ours or (
        stored is not None and ours is not None and "." not in stored and stored == ours.split(".")[0]
    )


def other_caller(stored: str | None, ours: str | None) -> bool:
    """Whether the key's request was sent by another caller than this one's (both digests name one)."""
    theirs, mine = (stored or "").partition(".")[2], (ours or "").partition(".")[2]
    return bool(theirs and mine and theirs != mine)


def key_reused(trigger: Trigger, claim: Claim) -> KeyReused:
    """The 422 for ``trigger``'s key, whose ``claim`` is bound to another request: naming that request
    (route, when, decision) to the caller who sent it, nothing of it to another caller."""
    model, _, key = trigger.event_id.partition(":")
    if other_caller(claim.request, trigger.request):
        return KeyReused(
            f"Idempotency-Key {key!r} was first used by another caller for a request of model {model}; a key is "
            "bound to the caller who first sent it and stands for that one request: send a key of your own "
            "(a new UUID) with this request"
        )
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
    if claim is not None and not same_request(claim.request, trigger.request):
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
    stored = records[0].trigger.get("request")
    if not same_request(stored, trigger.request):
        claim = Claim("done", tuple(r.id for r in records), records[0].at, trigger.event_type, stored)
        raise key_reused(trigger, claim)
    return records
