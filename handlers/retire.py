"""Retiring demoted deployments, as pure rules: which deployments of an endpoint to delete, and the
decision that records each deletion.

After a promotion the deployment(s) that served before stay at 0%, for a fast rollback: with their
full instance count, billed, and taking quota and one of the endpoint's few deployment slots. The
reconciler (:class:`handlers.reconcile.Reconciler`) deletes them on its pass:

- only deployments that a recorded ``promote`` decision demoted (the service never deletes what it
  did not take traffic from), each by the time of its latest demotion;
- never one that has live or mirrored traffic now (an operator may have sent traffic back to it);
- once ``deploy.retire_after`` has passed since its demotion, or at once when more than
  ``deploy.keep_previous`` demoted deployments wait at 0% (the newest ones are kept).

Each deletion is a ``retire`` decision under an id that depends only on the model, the deployment
and its demotion, so a pass that dies between deleting and recording repeats the same one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from handlers.keys import digest
from handlers.records import DecisionRecord, from_iso, iso, span
from handlers.rollout import RECONCILER

DELETING = frozenset({"deleting"})


@dataclass(frozen=True)
class Demotion:
    """``deployment`` lost its traffic to a promoted candidate at ``at`` (the promote decision ``by``)."""

    deployment: str
    at: datetime
    by: str


@dataclass(frozen=True)
class Retirement:
    """A deployment to delete, and why."""

    endpoint: str
    deployment: str
    demoted: Demotion
    why: str


def demotions(records: Iterable[DecisionRecord], endpoint: str) -> dict[str, Demotion]:
    """The latest demotion of each deployment of ``endpoint``, from recorded promote decisions."""
    out: dict[str, Demotion] = {}
    for rec in records:
        if rec.action != "promote" or rec.outcome != "submitted":
            continue
        if str(rec.details.get("endpoint") or endpoint) != endpoint:
            continue
        at = from_iso(rec.at)
        if at is None:
            continue
        for name in rec.details.get("demoted") or []:
            known = out.get(str(name))
            if known is None or at > known.at:
                out[str(name)] = Demotion(str(name), at, rec.id)
    return out


def to_retire(
    endpoint: str,
    deployments: Sequence[Any],
    demoted: dict[str, Demotion],
    retire_after: timedelta,
    keep_previous: int,
    now: datetime,
) -> list[Retirement]:
    """The demoted deployments of ``endpoint`` to delete now. ``deployments``: what the endpoint has
    (:class:`handlers.ports.DeploymentInfo`), so one already gone or being deleted is not asked for
    again, and one with traffic is never chosen."""
    waiting = [
        (demoted[d.name], d)
        for d in deployments
        if d.name in demoted and d.idle and str(d.state).lower() not in DELETING
    ]
    waiting.sort(key=lambda pair: (pair[0].at, pair[0].deployment), reverse=True)  # newest demotion first
    out: list[Retirement] = []
    for rank, (demotion, info) in enumerate(waiting):
        age = now - demotion.at
        if age >= retire_after:
            why = f"demoted {span(age)} ago by promotion {demotion.by}, longer than retire_after {span(retire_after)}"
        elif rank >= keep_previous:
            why = (
                f"demoted {span(age)} ago; {rank} more recently demoted deployment(s) wait at 0% and "
                f"keep_previous is {keep_previous}"
            )
        else:
            continue
        out.append(Retirement(endpoint, info.name, demotion, why))
    return out


def record_of(
    model: str, retirement: Retirement, now: datetime, outcome: str, error: str | None = None
) -> DecisionRecord:
    """The ``retire`` decision of one deletion, under its deterministic id."""
    name = f"{retirement.endpoint}/{retirement.deployment}"
    reason = f"deployment {name} deleted: it has no traffic and was {retirement.why}"
    if error is not None:
        reason = f"deleting deployment {name} failed: {error}; delete it by hand once it has no traffic"
    return DecisionRecord(
        id=f"rt-{digest('retire', model, name, iso(retirement.demoted.at))}",
        model=model,
        action="retire",
        outcome=outcome,
        reason=reason,
        trigger={"source": RECONCILER, "event_id": f"{RECONCILER}:{name}:retire", "event_type": "Tick"},
        at=iso(now),
        job={"name": name, "url": None},
        details={
            "endpoint": retirement.endpoint,
            "deployment": retirement.deployment,
            "demoted_at": iso(retirement.demoted.at),
            "promote_decision": retirement.demoted.by,
            "why": retirement.why,
        },
    )
