"""Approvals' pure rules (:mod:`handlers.approvals`): who a caller is, who may decide (four eyes, the
approver role), and the atomic steps on a pending flight (a retrain's or a rollout's) that the ledger
applies (as :mod:`handlers.guards` does). Stdlib only."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from handlers.records import DecisionRecord, ModelState, iso, span
from handlers.signals import TAG_DECISION

ROLLOUT = "rollout"  # the slot a deploy holds (handlers.guards.ROLLOUT)
SLOT_OF = {"retrain": "retrain", "deploy": ROLLOUT}  # the slot each action that may wait holds
PENDING = "pending"
RELEASE = "release"  # the mark on a pending flight that is being released (rejected or expired)


def who(caller: Mapping[str, Any]) -> str:
    return str(caller.get("name") or caller.get("user") or caller.get("id") or caller.get("kind") or "someone")


def identity(caller: Mapping[str, Any]) -> str | None:
    """Who ``caller`` is, as far as anyone can tell: a signed-in principal's object id, a command line's
    login name, either in one spelling (lower case: an object id is a GUID, a login name is compared without
    case by Windows); None for a function key, an event, the reconciler, or a principal without an id (a
    display name is not an identity: two spellings of one person, or one name of two)."""
    kind = caller.get("kind")
    if kind == "principal" and str(caller.get("id") or "").strip():
        return f"principal:{str(caller.get('id')).strip().lower()}"
    if kind == "command line" and str(caller.get("user") or "").strip().lower() not in ("", "unknown"):
        return f"command line:{str(caller.get('user')).strip().lower()}"
    return None


def self_approval(asked: Mapping[str, Any], approving: Mapping[str, Any]) -> bool:
    """Whether the approver is, as far as can be told, the caller who asked (four eyes refuses it)."""
    mine, theirs = identity(approving), identity(asked)
    return mine is not None and mine == theirs


def roles(caller: Mapping[str, Any]) -> frozenset[str]:
    """The app roles a signed-in principal's claims gave it (as the routes record them: space-separated;
    an app role's value holds no spaces). None for anyone else."""
    if caller.get("kind") != "principal":
        return frozenset()
    return frozenset(str(caller.get("roles") or "").split())


def refusal(
    key: str,
    four_eyes: bool,
    approver_role: str | None,
    asked: Mapping[str, Any],
    deciding: Mapping[str, Any],
    verb: str,
    what: str = "this",
) -> str | None:
    """Why ``deciding`` may not ``verb`` (approve, reject, promote) what ``asked`` asked for under the rule at
    ``key`` (``models.<m>.deploy.approval``), or None. The approver role needs a signed-in principal that holds
    it. Four eyes needs an approver whom the record can tell from the requester: a function key names nobody, so
    it is refused rather than counted as a second person; nor may the requester approve. Under four eyes a
    rejection needs an identity too (a leaked key could reject every candidate, unnamed), not a second person."""
    name = who(deciding)
    if approver_role is not None and approver_role not in roles(deciding):
        if deciding.get("kind") != "principal":
            return (
                f"{key}.approver_role: only a signed-in principal holding the app role {approver_role!r} may {verb} "
                f"it, and {name} is not signed in; sign in with Entra ID (RETRAIN_APP_SERVICE_AUTH=true, "
                "docs/security.md)"
            )
        return (
            f"{name} lacks the app role {approver_role!r} that {key}.approver_role asks of whoever may {verb} it; "
            "an owner of the app registration assigns it (docs/security.md, Approvals)"
        )
    if not four_eyes:
        return None
    if identity(deciding) is None:
        if verb == "reject":  # a leaked key could reject every candidate, unnamed: a denial of promotion
            return (
                f"{key}.four_eyes: a signed-in identity is needed to reject it, so that whoever stops it is named; "
                f"{name} names nobody. Sign in with Entra ID (RETRAIN_APP_SERVICE_AUTH=true, docs/security.md), use "
                f"`retrain reject` (as yourself), or let it expire ({key}.expires); or set four_eyes: false"
            )
        return (
            f"{key}.four_eyes: a signed-in identity is needed to {verb} it, so that the approver can be told from "
            f"the requester; {name} names nobody. Sign in with Entra ID (RETRAIN_APP_SERVICE_AUTH=true, "
            "docs/security.md), or set four_eyes: false"
        )
    if verb == "reject":  # withdrawing one's own request needs no second person
        return None
    if self_approval(asked, deciding):
        return f"{name} asked for {what} and may not {verb} it too ({key}.four_eyes); another operator does"
    return None


def requesters(
    record: DecisionRecord, get_decision: Callable[[str], DecisionRecord | None]
) -> list[tuple[str, Mapping[str, Any]]]:
    """Who asked for ``record`` (what they asked for, their caller): its trigger's caller; for a deploy of a
    run this service retrained, also whoever asked for that retrain, found through the ledger as provenance
    is (the retrain decision the run's tag names, for the model, whose job is the run). The deploy's own
    trigger is the run's event, which names nobody: without this, the person who retrained by hand could
    approve the deploy of their own run, alone."""
    out: list[tuple[str, Mapping[str, Any]]] = [("this", record.trigger.get("caller") or {})]
    retrain = retrain_behind(record, get_decision)
    if retrain is not None:
        out.append((f"the retrain decision {retrain.id}, whose run this deploys,", retrain.trigger.get("caller") or {}))
    return out


def retrain_behind(
    record: DecisionRecord, get_decision: Callable[[str], DecisionRecord | None]
) -> DecisionRecord | None:
    """The retrain decision whose run a deploy deploys, found as provenance is (the decision the candidate run's
    tag names, for the model, whose job is the run); None for anything else."""
    candidate = (record.details.get("rendered") or {}).get("candidate") or {} if record.action == "deploy" else {}
    run, tags = candidate.get("run_id"), candidate.get("run_tags") or {}
    named = next((str(v) for k, v in tags.items() if str(k).lower() == TAG_DECISION), "")
    retrain = get_decision(named) if run and named.startswith("re-") and len(named) < 64 else None
    if (
        retrain is not None
        and retrain.action == "retrain"
        and retrain.model == record.model
        and (retrain.job or {}).get("name") == run
    ):
        return retrain
    return None


def started_from(record: DecisionRecord) -> str | None:
    """The run ``record`` starts from, whose creator four eyes compare with the approver: a deploy's candidate
    run, an upstream run's retrain's upstream run (``details.upstream_run``); None for anything else."""
    if record.action == "deploy":
        run = ((record.details.get("rendered") or {}).get("candidate") or {}).get("run_id")
    else:
        run = record.details.get("upstream_run")
    return str(run) if run else None


def take(state: ModelState, decision_id: str, now: datetime, kind: str = ROLLOUT) -> tuple[ModelState | None, bool]:
    """The approval's atomic step: the pending ``kind`` flight of ``decision_id``, not being released,
    becomes ``reserved`` (from now, for the reconciler's lease). False when it is not (any more)."""
    flight = state.flights.get(kind)
    if flight is None or flight.decision != decision_id or flight.status != PENDING or RELEASE in flight.data:
        return None, False
    taken = replace(flight, status="reserved", since=iso(now))
    return replace(state, flights={**state.flights, kind: taken}), True


def mark(
    state: ModelState, decision_id: str, release: dict[str, Any], kind: str = ROLLOUT
) -> tuple[ModelState | None, bool]:
    """The release's atomic step: the pending ``kind`` flight of ``decision_id`` is marked released (an
    approval can no longer take it). False when it is not pending, or marked already."""
    flight = state.flights.get(kind)
    if flight is None or flight.decision != decision_id or flight.status != PENDING or RELEASE in flight.data:
        return None, False
    marked = replace(flight, data={**flight.data, RELEASE: dict(release)})
    return replace(state, flights={**state.flights, kind: marked}), True


def still_acting(decision_id: str, approved: Mapping[str, Any], lease: timedelta) -> str:
    """Why an approved reservation that another delivery (or the reconciler's catch of a run) found is not
    carried out by it yet: the approval's worker may still be acting (within the lease, as the reconciler's
    :func:`handlers.guards.take_over` waits), or another resumer took it over within the lease."""
    said = (
        f", approved by {approved['approved_by']} at {approved.get('approved_at')},"
        if approved.get("approved_by")
        else ""
    )
    return (
        f"decision {decision_id}{said} is being carried out by another worker (or was resumed within "
        f"{span(lease)}); asked again later"
    )


def asked(decision_id: str, rule: Any, now: datetime) -> dict[str, Any]:
    """What a pending decision records of its approval (``rule``: :class:`handlers.policy.ApprovalRule`):
    when it expires, whether four eyes apply, the role that decides, and the two routes that decide it
    (for a notification)."""
    return {
        "expires": iso(now + rule.expires),
        "four_eyes": rule.four_eyes,
        **({"approver_role": rule.approver_role} if rule.approver_role else {}),
        "asked_at": iso(now),
        "links": {v: f"/api/decisions/{decision_id}/{v}" for v in ("approve", "reject")},
    }


def superseded(old: DecisionRecord, newer: str, now: datetime) -> DecisionRecord:
    """The record of a decision waiting for approval whose slot the newer decision ``newer`` took (a newer
    candidate's deploy, a newer signal's retrain)."""
    approval = {**dict(old.details.get("approval") or {}), "superseded_by": newer, "superseded_at": iso(now)}
    newer_one, done = (
        ("a newer signal's retrain", "nothing submitted")
        if old.action == "retrain"
        else ("a newer candidate", "nothing deployed")
    )
    return replace(
        old,
        outcome="skipped",
        reason=f"{old.reason.split('; waits for approval')[0]}; superseded by decision {newer}, {newer_one}, "
        f"before anyone approved it; {done}",
        at=iso(now),
        details={**old.details, "approval": approval},
    )
