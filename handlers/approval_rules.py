"""Approvals' pure rules (:mod:`handlers.approvals`): who a caller is, four eyes, and the atomic steps on
a pending rollout flight that the ledger applies (as :mod:`handlers.guards` does). Stdlib only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from handlers.records import DecisionRecord, ModelState, iso

ROLLOUT = "rollout"  # the slot a deploy holds (handlers.guards.ROLLOUT)
PENDING = "pending"
RELEASE = "release"  # the mark on a pending flight that is being released (rejected or expired)


def who(caller: Mapping[str, Any]) -> str:
    return str(caller.get("name") or caller.get("user") or caller.get("id") or caller.get("kind") or "someone")


def identity(caller: Mapping[str, Any]) -> str | None:
    """Who ``caller`` is, as far as anyone can tell: a signed-in principal's object id (or name), a
    command line's login name; None for a function key, an event or the reconciler (nobody known)."""
    kind = caller.get("kind")
    if kind == "principal" and (caller.get("id") or caller.get("name")):
        return f"principal:{caller.get('id') or caller.get('name')}"
    if kind == "command line" and caller.get("user") not in (None, "", "unknown"):
        return f"command line:{caller.get('user')}"
    return None


def self_approval(asked: Mapping[str, Any], approving: Mapping[str, Any]) -> bool:
    """Whether the approver is, as far as can be told, the caller who asked (four eyes refuses it)."""
    mine, theirs = identity(approving), identity(asked)
    return mine is not None and mine == theirs


def take(state: ModelState, decision_id: str, now: datetime) -> tuple[ModelState | None, bool]:
    """The approval's atomic step: the pending flight of ``decision_id``, not being released, becomes
    ``reserved`` (from now, for the reconciler's lease). False when it is not (any more)."""
    flight = state.flights.get(ROLLOUT)
    if flight is None or flight.decision != decision_id or flight.status != PENDING or RELEASE in flight.data:
        return None, False
    taken = replace(flight, status="reserved", since=iso(now))
    return replace(state, flights={**state.flights, ROLLOUT: taken}), True


def mark(state: ModelState, decision_id: str, release: dict[str, Any]) -> tuple[ModelState | None, bool]:
    """The release's atomic step: the pending flight of ``decision_id`` is marked released (an
    approval can no longer take it). False when it is not pending, or marked already."""
    flight = state.flights.get(ROLLOUT)
    if flight is None or flight.decision != decision_id or flight.status != PENDING or RELEASE in flight.data:
        return None, False
    marked = replace(flight, data={**flight.data, RELEASE: dict(release)})
    return replace(state, flights={**state.flights, ROLLOUT: marked}), True


def asked(decision_id: str, rule: Any, now: datetime) -> dict[str, Any]:
    """What a pending deploy records of its approval (``rule``: :class:`handlers.policy.ApprovalRule`):
    when it expires, whether four eyes apply, and the two routes that decide it (for a notification)."""
    return {
        "expires": iso(now + rule.expires),
        "four_eyes": rule.four_eyes,
        "asked_at": iso(now),
        "links": {v: f"/api/decisions/{decision_id}/{v}" for v in ("approve", "reject")},
    }


def superseded(old: DecisionRecord, newer: str, now: datetime) -> DecisionRecord:
    """The record of a deploy waiting for approval whose slot the newer candidate ``newer`` took."""
    approval = {**dict(old.details.get("approval") or {}), "superseded_by": newer, "superseded_at": iso(now)}
    return replace(
        old,
        outcome="skipped",
        reason=f"{old.reason.split('; waits for approval')[0]}; superseded by decision {newer}, a newer candidate, "
        "before anyone approved it; nothing deployed",
        at=iso(now),
        details={**old.details, "approval": approval},
    )
