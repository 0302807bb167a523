"""The operator's rules (pure: facts in, a transition or a refusal out): :func:`plan` decides an
operator's rollback, promote, pause or resume on the model's state (:mod:`handlers.operate` reads the
facts, writes the transition ahead and has the executor carry it out).

A transition pending in the rollout's flight is carried out first (the operator is told to try again),
but a smoke test not judged yet, deferred or its requests unanswered so far: the operator's transition
supersedes it (:mod:`handlers.rollout.supersede`), its record saying so and why the smoke test waited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from handlers.keys import digest
from handlers.records import Flight, ModelState, iso
from handlers.rollout import supersede
from handlers.rollout.progress import ROLLOUT, RolloutProgress, Transition
from handlers.rollout.traffic import PROVISIONED, fmt, live
from handlers.signals import OperatorRequest, Trigger


@dataclass(frozen=True)
class Facts:
    """What the rule needs from Azure, read beforehand: the candidate's provisioning state (for a
    promotion before the first step), the endpoint's traffic now, and whether each deployment of
    the kept traffic still exists and is provisioned."""

    provisioning: str | None = None
    traffic: Mapping[str, int] | None = None
    existing: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Planned:
    """The transition to write into ``flight`` (``start``: the rollout's progress to lay over the
    flight's; ``opens``: the flight is new, a rollback to the kept traffic)."""

    flight: Flight
    transition: Transition
    start: RolloutProgress | None = None
    opens: bool = False
    written: bool = False  # written ahead already by this same request (a retry after a crash)
    supersedes: Transition | None = None  # the smoke test not judged yet it takes the place of (rollout.supersede)


@dataclass(frozen=True)
class Refused:
    """Why the action does not apply (409)."""

    why: str


def who(trigger: Trigger) -> str:
    caller = dict(trigger.caller)
    return caller.get("name") or caller.get("user") or caller.get("id") or caller.get("kind") or "an operator"


def plan(request: OperatorRequest, state: ModelState, facts: Facts, now: datetime) -> Planned | Refused:
    """The operator's transition on ``state``, or why there is none. Pure."""
    flight = state.flights.get(ROLLOUT)
    trig = request.trigger.as_dict()
    said = f" by {who(request.trigger)}: {request.reason}"
    if flight is not None and flight.status == "pending":
        return Refused(
            f"the deploy of {request.model} waits for approval; approve or reject it first "
            f"(POST /api/decisions/{flight.decision}/approve or /reject)"
        )
    if flight is not None and (flight.status != "submitted" or not flight.job):
        return Refused(
            f"the deployment of {request.model} is still being started (decision {flight.decision}); try again once "
            "it is"
        )
    if flight is None:
        if request.action == "rollback":
            return to_kept(request, state, facts, now)
        return Refused(f"no rollout of {request.model} is in flight; nothing to {request.action}")
    endpoint, _, candidate = str(flight.job).partition("/")
    held = RolloutProgress.of(flight)
    data = held or RolloutProgress()
    pending = data.pending
    if pending is not None:
        if pending.trigger and pending.trigger.get("event_id") == request.trigger.event_id:
            return Planned(flight, pending, written=True)
        if not supersede.supersedable(pending):
            return Refused(
                f"a {pending.kind} transition of the rollout of {flight.job} is being carried out; try again after "
                "the next reconciler pass"
            )
        said += supersede.said(pending)
    replaced = pending  # None, or the smoke test not judged yet that the operator's transition takes the place of
    step, steps, at, paused = data.step, data.steps, data.at, data.paused

    def moved(
        kind: str, target: dict[str, int] | None, reason: str, start: RolloutProgress | None = None, **details: Any
    ) -> Planned:
        """The transition at the current step; a flight without rollout progress yet gets the minimum."""
        if replaced is not None:
            details["superseded"] = supersede.superseded(replaced)
        t = Transition.of(request.model, flight, kind, step, step, target, reason + said, trigger=trig, **details)
        return Planned(
            flight, t, start or (None if held else RolloutProgress(endpoint, candidate)), supersedes=replaced
        )

    if request.action == "pause":
        if paused:
            return Refused(f"the rollout of {flight.job} is paused already (since {paused.get('at')}); resume it")
        stays = f"traffic stays {fmt(data.traffic)}" if data.traffic else "no traffic was shifted yet"
        if data.mirror:
            stays += f", {data.mirror.get('percent')}% mirrored to {candidate}"
        return moved("pause", None, f"rollout of {flight.job} paused {at}; {stays}")
    if request.action == "resume":
        if not paused:
            return Refused(f"the rollout of {flight.job} is not paused; nothing to resume")
        restarts = "; its bake starts again" if step >= 0 or data.mirror else ""
        return moved("resume", None, f"rollout of {flight.job} resumed {at}{restarts}")
    if request.action == "promote":
        start: RolloutProgress | None = None
        before = data.traffic
        if step < 0:
            state_now = facts.provisioning
            if state_now is None or state_now.lower() != PROVISIONED:
                return Refused(
                    f"the deployment {flight.job} is {state_now or 'missing'}, not provisioned; promote it once it is"
                )
            before = live(facts.traffic or {})
            start = RolloutProgress(endpoint, candidate, original=before)
        target = {candidate: 100}
        skipped = [f"{p}%" for p in steps[step + 1 :]] if step >= 0 else [f"{p}%" for p in steps]
        demoted = sorted(d for d, pct in (data.original or before or {}).items() if d != candidate and pct)
        cleared = "; mirror cleared" if data.mirror else ""
        return moved(
            "promote-now",
            target,
            f"candidate {flight.job} promoted {at}, skipping {', '.join(skipped) or 'no step'}: traffic "
            f"{fmt(before)} -> {fmt(target)}{cleared}",
            start,
            mirror={} if data.mirror else None,  # Azure ML: never live and mirrored at once
            endpoint=endpoint,
            demoted=demoted,  # retired after deploy.retire_after, their monitors follow the candidate
        )
    original = data.original
    if step < 0 and data.mirror:
        return moved(
            "manual-rollback",
            None,
            f"rollout of {flight.job} rolled back {at}; mirror cleared, its traffic was never live (live traffic "
            f"stays {fmt(data.traffic)})",
            mirror={},
        )
    if step < 0 or not original:
        return moved(
            "manual-rollback", None, f"rollout of {flight.job} rolled back before any traffic; traffic never changed"
        )
    return moved(
        "manual-rollback", dict(original), f"rollout of {flight.job} rolled back {at}; traffic back to {fmt(original)}"
    )


def to_kept(request: OperatorRequest, state: ModelState, facts: Facts, now: datetime) -> Planned | Refused:
    """No rollout in flight: the traffic the last promotion replaced, as far as it still exists."""
    kept = state.kept
    if not kept or not kept.get("traffic") or not kept.get("endpoint"):
        return Refused(
            f"no rollout of {request.model} is in flight and no promotion kept a previous deployment; nothing to "
            "roll back to"
        )
    endpoint, traffic = str(kept["endpoint"]), {str(d): int(p) for d, p in dict(kept["traffic"]).items()}
    left = {d: p for d, p in traffic.items() if d in facts.existing and p > 0}
    if not left:
        return Refused(
            f"the deployment(s) {', '.join(sorted(traffic))} that {kept.get('replaced_by')} replaced no longer exist "
            f"on endpoint {endpoint} (retired?); nothing to roll back to"
        )
    target = rescaled(left)
    current = live(facts.traffic or {})
    main = max(target, key=lambda d: (target[d], d))
    decision = f"op-{digest('operate', request.model, 'rollback', request.trigger.event_id)}"
    flight = Flight(decision, iso(now), "submitted", f"{endpoint}/{main}")
    gone = sorted(set(traffic) - set(left))
    note = f" ({', '.join(gone)} no longer exist)" if gone else ""
    transition = Transition.of(
        request.model,
        flight,
        "manual-rollback",
        -1,
        -1,
        target,
        f"traffic of {endpoint} back to the deployment(s) the promotion of {kept.get('replaced_by')} replaced"
        f"{note}: {fmt(current)} -> {fmt(target)} by {who(request.trigger)}: {request.reason}",
        trigger=request.trigger.as_dict(),
        kept=dict(kept),
    )
    progress = RolloutProgress(endpoint, main, original=current, restores_kept=True, pending=transition)
    return Planned(progress.kept_in(flight), transition, opens=True)


def rescaled(traffic: Mapping[str, int]) -> dict[str, int]:
    """``traffic`` scaled to sum to 100 (largest remainder), keeping its proportions."""
    total = sum(traffic.values())
    exact = {d: 100 * p / total for d, p in sorted(traffic.items())}
    out = {d: int(v) for d, v in exact.items()}
    for d in sorted(exact, key=lambda d: (-(exact[d] - out[d]), -traffic[d], d))[: 100 - sum(out.values())]:
        out[d] += 1
    return {d: p for d, p in out.items() if p > 0}
