"""Retiring deployments that no longer serve, as pure rules: which deployments of an endpoint to
delete, and the decision that records each deletion.

After a promotion the deployment(s) that served before stay at 0%, for a fast rollback: with their
full instance count, billed, and taking quota and one of the endpoint's (at most 20) deployment
slots. So does each candidate that was rolled back (by the reconciler's judge or an operator) and
each one whose deployment failed to provision (rolled back before any traffic). The reconciler
(:class:`handlers.reconcile.Reconciler`) deletes them on its pass:

- only deployments the service's own recorded decisions name: one a ``promote`` decision demoted
  (:func:`demotions`), or the candidate of a ``rollback`` decision (:func:`rejections`: the
  deployment a rollout rolled back, or the promoted one an operator's rollback took the traffic
  from); the service never deletes what it did not create or take traffic from;
- each by its latest such event: a deployment demoted after it was rolled back follows the demotion
  rules, and one that a later decision gave traffic to again, or rolls out again, is not rejected;
- never one that has live or mirrored traffic now (an operator may have sent traffic back to it),
  never one a rollout of the model is in flight on, never one being deleted already;
- a demoted deployment once ``deploy.retire_after`` has passed since its demotion, or at once when
  more than ``deploy.keep_previous`` demoted deployments wait at 0% (the newest ones are kept);
- a rolled-back or failed candidate once ``deploy.retire_after`` has passed since its rollback.
  ``keep_previous`` does not count or keep it: a rejected candidate is no fallback.

Each deletion is a ``retire`` decision under an id that depends only on the model, the deployment
and the event it is retired for (its demotion's time, or its rollback decision), so a pass that dies
between deleting and recording repeats the same one.

The model's decisions are read only when something may be due (:func:`due`): the end of a rollout
(:func:`handlers.rollout.progress.commit`) makes the model's ``retire_due`` now; after a look it becomes the
time the next deployment that waits is due (:func:`next_due`), or ``""`` when none waits. A state
that has none yet (written before it was kept) is looked at once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from handlers.keys import digest
from handlers.records import DecisionRecord, ModelState, from_iso, iso, span
from handlers.rollout.progress import PROMOTIONS, RECONCILER, ROLLBACKS, ROLLOUT, ROLLS_OUT, RolloutProgress

DELETING = frozenset({"deleting"})


@dataclass(frozen=True)
class Demotion:
    """``deployment`` lost its traffic to a promoted candidate at ``at`` (the promote decision ``by``)."""

    deployment: str
    at: datetime
    by: str


@dataclass(frozen=True)
class Rejection:
    """The candidate ``deployment`` was rolled back at ``at`` by the rollback decision ``by`` (the
    reconciler's or an operator's). ``failed``: the provisioning state its deployment ended in when it
    was rolled back for failing to provision (before any traffic), else None. ``refused``: the
    rollback's own traffic change was refused by Azure (recorded failed; an operator set it by hand)."""

    deployment: str
    at: datetime
    by: str
    failed: str | None = None
    refused: bool = False

    def said(self) -> str:
        """Why it is retired, in words: which decision rejected it, and when."""
        said = f"rolled back at {iso(self.at)} by {self.by}"
        if self.failed is not None:
            return f"{said}, a failed candidate (its deployment ended provisioning {self.failed})"
        if self.refused:
            return f"{said} (a rollback whose traffic change Azure refused; the traffic was set by hand since)"
        return said


@dataclass(frozen=True)
class Retirement:
    """A deployment to delete, and why: ``since`` is the demotion or the rejection it is retired for."""

    endpoint: str
    deployment: str
    since: Demotion | Rejection
    why: str


def demotions(records: Iterable[DecisionRecord], endpoint: str) -> dict[str, Demotion]:
    """The latest demotion of each deployment of ``endpoint``, from recorded promote decisions."""
    out: dict[str, Demotion] = {}
    for rec in records:
        if rec.action not in PROMOTIONS or rec.outcome != "submitted":
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


def _named(rec: DecisionRecord) -> tuple[str, str]:
    """The endpoint and deployment a rollout decision names (its ``job``: ``endpoint/deployment``)."""
    endpoint, _, deployment = str((rec.job or {}).get("name") or "").partition("/")
    return endpoint, deployment


def _served(rec: DecisionRecord) -> set[str]:
    """The deployments a decision gave traffic to (its ``details.traffic``, the split it set)."""
    traffic = rec.details.get("traffic")
    if not isinstance(traffic, Mapping):
        return set()
    return {str(d) for d, pct in traffic.items() if isinstance(pct, int | float) and pct > 0}


def _rejected_by(rec: DecisionRecord, endpoint: str) -> Rejection | None:
    """The candidate a rollback decision of ``endpoint`` took the traffic from (or never gave any),
    or None: a rollback before anything existed (its deployment was missing), another endpoint's."""
    at = from_iso(rec.at)
    if at is None:
        return None
    kept = rec.details.get("kept")
    if isinstance(kept, Mapping):  # an operator's rollback to the traffic a promotion replaced
        where, name = str(kept.get("endpoint") or ""), str(kept.get("replaced_by") or "")
    else:
        where, name = _named(rec)
    if where != endpoint or not name or name in _served(rec):
        return None
    state = rec.details.get("provisioning")
    if state == "missing":  # nothing was created, nothing to delete
        return None
    failed = str(state) if state and str(state).lower() != "succeeded" else None
    compared = "compare" in rec.details  # a batch comparison's verdict: nothing was refused
    return Rejection(name, at, rec.id, failed, refused=rec.outcome == "failed" and not compared)


def rejections(records: Iterable[DecisionRecord], endpoint: str) -> dict[str, Rejection]:
    """The latest rejection of each candidate of ``endpoint``, from recorded rollback decisions (one
    Azure refused included: the candidate may have traffic still, which the deletion checks), unless
    a later decision gave it traffic again or rolls it out again."""
    out: dict[str, Rejection] = {}
    revived: dict[str, datetime] = {}
    for rec in records:
        at = from_iso(rec.at)
        lost = rec.outcome == "skipped" and "compare" in rec.details  # a batch candidate that lost its comparison
        if at is None or (rec.outcome not in ("submitted", "failed") and not lost):
            continue
        if rec.action in ROLLBACKS:
            found = _rejected_by(rec, endpoint)
            if found is not None and (found.deployment not in out or found.at > out[found.deployment].at):
                out[found.deployment] = found
        names = set(_served(rec))
        where, name = _named(rec)
        if rec.action in ROLLS_OUT and rec.outcome == "submitted" and where == endpoint:
            names.add(name)
        for name in names:
            if name not in revived or at > revived[name]:
                revived[name] = at
    return {name: r for name, r in out.items() if name not in revived or revived[name] <= r.at}


def in_flight(state: ModelState | None) -> set[str]:
    """The deployments a rollout of the model in flight is on: never retired meanwhile."""
    flight = None if state is None else state.flights.get(ROLLOUT)
    if flight is None:
        return set()
    progress = RolloutProgress.of(flight)
    names = {str(flight.job or "").partition("/")[2]}
    if progress is not None and progress.deployment:
        names.add(progress.deployment)
    return names - {""}


def retire_id(model: str, endpoint: str, since: Demotion | Rejection) -> str:
    """The id of the ``retire`` decision of ``endpoint/deployment`` for ``since``: a demotion by its
    time (as before rejected candidates were retired), a rejection by its rollback decision."""
    name = f"{endpoint}/{since.deployment}"
    if isinstance(since, Demotion):
        return f"rt-{digest('retire', model, name, iso(since.at))}"
    return f"rt-{digest('retire', model, name, 'rollback', since.by)}"


def waiting(
    model: str,
    endpoint: str,
    records: Sequence[DecisionRecord],
    keep: Collection[str],
    retire_after: timedelta,
    now: datetime,
) -> tuple[dict[str, Demotion], dict[str, Rejection]]:
    """From one read of the model's decisions: the demoted deployments and the rejected candidates
    that may be retired (by its latest event each), none already retired (a ``submitted`` retire
    decision for the same event) or in ``keep``. A rejected candidate only once it is due: until
    then nothing about it needs Azure to be asked."""
    done = {r.id for r in records if r.action == "retire" and r.outcome == "submitted"}
    demoted = demotions(records, endpoint)
    rejected = rejections(records, endpoint)
    for name in set(demoted) & set(rejected):  # the later event decides which rule applies
        if demoted[name].at >= rejected[name].at:
            del rejected[name]
        else:
            del demoted[name]
    demoted = {n: d for n, d in demoted.items() if n not in keep and retire_id(model, endpoint, d) not in done}
    rejected = {
        n: r
        for n, r in rejected.items()
        if n not in keep and now - r.at >= retire_after and retire_id(model, endpoint, r) not in done
    }
    return demoted, rejected


def to_retire(
    endpoint: str,
    deployments: Sequence[Any],
    demoted: dict[str, Demotion],
    retire_after: timedelta,
    keep_previous: int,
    now: datetime,
    rejected: Mapping[str, Rejection] | None = None,
) -> list[Retirement]:
    """The demoted deployments and rejected candidates of ``endpoint`` to delete now.
    ``deployments``: what the endpoint has (:class:`handlers.workspace_ports.DeploymentInfo`), so one already
    gone or being deleted is not asked for again, and one with traffic is never chosen.
    ``keep_previous`` counts and keeps demoted deployments only."""
    idle = {d.name: d for d in deployments if d.idle and str(d.state).lower() not in DELETING}
    waiting_demoted = [(demoted[n], info) for n, info in idle.items() if n in demoted]
    waiting_demoted.sort(key=lambda pair: (pair[0].at, pair[0].deployment), reverse=True)  # newest demotion first
    out: list[Retirement] = []
    for rank, (demotion, info) in enumerate(waiting_demoted):
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
    for name, rejection in sorted((rejected or {}).items(), key=lambda kv: (kv[1].at, kv[0]), reverse=True):
        age = now - rejection.at
        if name not in idle or name in demoted or age < retire_after:
            continue
        why = f"{rejection.said()}, {span(age)} ago, longer than retire_after {span(retire_after)}"
        out.append(Retirement(endpoint, name, rejection, why))
    return out


def record_of(
    model: str, retirement: Retirement, now: datetime, outcome: str, error: str | None = None
) -> DecisionRecord:
    """The ``retire`` decision of one deletion, under its deterministic id (:func:`retire_id`)."""
    name = f"{retirement.endpoint}/{retirement.deployment}"
    since = retirement.since
    what = "candidate deployment" if isinstance(since, Rejection) else "deployment"
    reason = f"{what} {name} deleted: it has no traffic and was {retirement.why}"
    if error is not None:
        reason = f"deleting {what} {name} failed: {error}; delete it by hand once it has no traffic"
    details: dict[str, Any] = {"endpoint": retirement.endpoint, "deployment": retirement.deployment}
    if isinstance(since, Demotion):
        details.update(demoted_at=iso(since.at), promote_decision=since.by)
    else:
        details.update(rolled_back_at=iso(since.at), rollback_decision=since.by)
        if since.failed is not None:
            details["failed"] = since.failed
    return DecisionRecord(
        id=retire_id(model, retirement.endpoint, since),
        model=model,
        action="retire",
        outcome=outcome,
        reason=reason,
        trigger={"source": RECONCILER, "event_id": f"{RECONCILER}:{name}:retire", "event_type": "Tick"},
        at=iso(now),
        job={"name": name, "url": None},
        details={**details, "why": retirement.why},
    )


def due(state: ModelState, now: datetime) -> bool:
    """Whether the model's decisions may name a deployment to retire at ``now``: its ``retire_due``
    is not known (looked at once), or is a time that has come; ``""``: none waits."""
    if state.retire_due is None:
        return True
    if not state.retire_due:
        return False
    at = from_iso(state.retire_due.partition("#")[0])
    return at is None or now >= at


def next_due(
    model: str,
    endpoint: str,
    records: Sequence[DecisionRecord],
    keep: Collection[str],
    retire_after: timedelta,
    now: datetime,
    chosen: Collection[str],
    retired: Collection[str],
) -> str:
    """After a look at ``records``: when the next one that waits is due (``iso``), or ``""`` when
    none does. ``chosen``: the deployments this look chose to delete, ``retired`` those it deleted
    (recorded ``submitted``); one chosen and not deleted is due again at once, as is one due that
    was not chosen (it has traffic, is gone or being deleted: looked at on each pass, as before)."""
    demoted, rejected = waiting(model, endpoint, records, keep, retire_after, datetime.max.replace(tzinfo=now.tzinfo))
    waits: dict[str, datetime] = {n: d.at for n, d in demoted.items()}
    waits.update((n, r.at) for n, r in rejected.items())
    times = [now if name in chosen else at + retire_after for name, at in waits.items() if name not in retired]
    return iso(min(times)) if times else ""


def noted(state: ModelState, seen: str | None, due_next: str) -> tuple[ModelState | None, None]:
    """``state`` with ``retire_due`` set to ``due_next``, unless a rollout ended since it was ``seen``
    (that end's mark stands) or it is so already."""
    if state.retire_due != seen or state.retire_due == due_next:
        return None, None
    return replace(state, retire_due=due_next), None
