"""A rollout's steps, as pure rules: the traffic split of each step, the health verdict after a
bake, and the changes to a model's rollout flight that the ledger applies atomically.

A passing candidate becomes a deployment at 0% beside the live one (its rollout flight is
``submitted``). The reconciler then moves it on, one transition per pass
(:class:`handlers.stepper.RolloutStepper`, run by :class:`handlers.reconcile.Reconciler`): once the deployment is provisioned, the candidate gets
``steps[0]`` percent of the traffic; after each ``bake`` the health check over the step's window
decides: healthy -> the next step (at 100%: ``promote``, the flight is released), unhealthy ->
``rollback`` (the endpoint gets back the traffic it had before the rollout, the flight is released).

Every transition (:class:`Transition`) is written ahead into the flight (``data["rollout"]["pending"]``) before it
touches Azure, carried out, recorded under a deterministic id, then committed. A crash anywhere
leaves the pending transition for the next pass, which carries out the same one again: the same
traffic (which the adapter does not send twice), the same record id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from handlers.keys import digest
from handlers.records import DecisionRecord, Flight, ModelState, from_iso, iso, span

if TYPE_CHECKING:
    from handlers.policy import RolloutRule
    from handlers.ports import HealthReading

ROLLOUT = "rollout"  # the flight kind (handlers.guards.ROLLOUT)
RECONCILER = "reconciler"
PROVISIONED = "succeeded"
PROVISIONING_FAILED = frozenset({"failed", "canceled", "cancelled"})

# kind of a transition -> (decision record action, id prefix)
_RECORDS = {
    "step": ("rollout", "rs"),
    "promote": ("promote", "pr"),
    "rollback": ("rollback", "rb"),
    "hold": ("rollout", "rh"),
}


# --------------------------------------------------------------------------- traffic


def split(original: dict[str, int], candidate: str, percent: int) -> dict[str, int]:
    """The candidate gets ``percent``; the rest is shared among the deployments that had traffic
    before the rollout, in proportion to what they had (largest remainder, so it sums to 100).
    Deployments that had 0% keep 0% and are left out."""
    others = {d: p for d, p in sorted(original.items()) if d != candidate and p > 0}
    rest = 100 - percent
    total = sum(others.values())
    if not others or rest <= 0:  # nobody else served: nothing to share (start_deploy needs a live deployment)
        return {candidate: 100}
    out = {candidate: percent}
    exact = {d: rest * p / total for d, p in others.items()}
    shares = {d: int(v) for d, v in exact.items()}
    left = rest - sum(shares.values())
    for d in sorted(exact, key=lambda d: (-(exact[d] - shares[d]), -others[d], d))[:left]:
        shares[d] += 1
    out.update({d: s for d, s in shares.items() if s > 0})
    return out


def live(traffic: Mapping[str, Any]) -> dict[str, int]:
    """The deployments that get traffic, name -> percent: one at 0% is the same as one left out."""
    return {str(k): int(v) for k, v in traffic.items() if int(v) > 0}


def same_traffic(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal splits, a deployment at 0% being the same as one left out."""
    return live(a) == live(b)


# --------------------------------------------------------------------------- the health verdict


@dataclass(frozen=True)
class HealthVerdict:
    """The judgement of one reading: ``status`` is healthy, unhealthy or no_traffic (fewer requests
    than ``min_requests``); ``next`` what the rollout does: advance, rollback, hold or wait."""

    status: str
    next: str
    why: str
    requests: int
    errors: int
    error_rate: float | None
    p95_ms: float | None
    max_error_rate: float
    min_requests: int
    max_latency_ms: float | None
    source: str
    query: str
    since: str
    until: str
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(rule: RolloutRule, reading: HealthReading, baked: timedelta) -> HealthVerdict:
    """Judge a step's reading after it baked ``baked``: the numbers against ``rule.health``."""
    health = rule.health
    rate = reading.errors / reading.requests if reading.requests else None

    def verdict(status: str, nxt: str, why: str) -> HealthVerdict:
        return HealthVerdict(
            status,
            nxt,
            why,
            reading.requests,
            reading.errors,
            rate,
            reading.p95_ms,
            health.max_error_rate,
            health.min_requests,
            health.max_latency_ms,
            reading.source,
            reading.query,
            reading.since,
            reading.until,
            reading.note,
        )

    seen = f"{reading.errors} 5xx of {reading.requests} request(s)"
    if reading.requests < health.min_requests or reading.requests == 0:
        why = f"{seen} is less traffic than min_requests {health.min_requests}"
        if reading.note:
            why += f" ({reading.note})"
        if baked < rule.longest_bake:
            return verdict("no_traffic", "wait", f"{why}; baking on, up to {span(rule.longest_bake)}")
        action = {"promote": "advance", "hold": "hold", "rollback": "rollback"}[health.on_no_traffic]
        return verdict(
            "no_traffic",
            action,
            f"{why} after {span(baked)} of baking; on_no_traffic is {health.on_no_traffic}",
        )
    assert rate is not None
    if rate > health.max_error_rate:
        return verdict(
            "unhealthy", "rollback", f"{seen} ({rate:.1%}) is above max_error_rate {health.max_error_rate:.1%}"
        )
    latency = f", p95 {reading.p95_ms:.0f} ms" if reading.p95_ms is not None else ""
    if health.max_latency_ms is not None and reading.p95_ms is not None and reading.p95_ms > health.max_latency_ms:
        return verdict(
            "unhealthy",
            "rollback",
            f"p95 latency {reading.p95_ms:.0f} ms is above max_latency_ms {health.max_latency_ms:.0f} ({seen})",
        )
    return verdict("healthy", "advance", f"{seen} ({rate:.1%}){latency}: within the policy's limits")


# --------------------------------------------------------------------------- the flight's rollout data


def data_of(flight: Flight) -> dict[str, Any] | None:
    """The rollout's progress kept in the flight: None until the first step is written."""
    data = flight.data.get(ROLLOUT)
    return dict(data) if isinstance(data, dict) else None


@dataclass(frozen=True)
class Transition:
    """One move of a rollout, decided on the step ``from_step`` (-1: before the first step) and written
    ahead into the flight before it touches Azure: ``kind`` step (to ``steps[step]``), promote,
    rollback or hold; ``target`` the traffic to set (None: leave the traffic as it is). Its record id
    depends only on the model, the deploy decision, the kind and the step, so a pass that carries out
    a transition a dead pass left pending writes the same record."""

    id: str
    kind: str
    step: int
    from_step: int
    target: dict[str, int] | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        model: str,
        flight: Flight,
        kind: str,
        step: int,
        from_step: int,
        target: dict[str, int] | None,
        reason: str,
        **details: Any,
    ) -> Transition:
        prefix = _RECORDS[kind][1]
        return cls(
            id=f"{prefix}-{digest(ROLLOUT, model, flight.decision, kind, str(step))}",
            kind=kind,
            step=step,
            from_step=from_step,
            target=None if target is None else dict(target),
            reason=reason,
            details={k: v for k, v in details.items() if v is not None},
        )

    def replaced_by_rollback(self, model: str, flight: Flight, original: dict[str, int] | None, why: str) -> Transition:
        """The rollback that takes this transition's place when Azure refused it for good."""
        return Transition.of(
            model,
            flight,
            "rollback",
            self.step,
            self.from_step,
            original,
            f"rollout of {flight.job} rolled back: setting traffic {fmt(self.target)} was refused: {why}",
            refused=why,
        )

    def failed(self, why: str) -> Transition:
        return replace(self, reason=f"{self.reason}; failed: {why}; set the traffic by hand")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "step": self.step,
            "from": self.from_step,
            "target": self.target,
            "reason": self.reason,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transition:
        """A transition as the flight keeps it (raises KeyError, TypeError or ValueError otherwise)."""
        target = data["target"]
        return cls(
            id=str(data["id"]),
            kind=str(data["kind"]),
            step=int(data["step"]),
            from_step=int(data.get("from", data["step"])),
            target=None if target is None else {str(k): int(v) for k, v in dict(target).items()},
            reason=str(data["reason"]),
            details=dict(data.get("details") or {}),
        )


def fmt(traffic: Mapping[str, int] | None) -> str:
    """A split for people: ``{blue: 90%, cand: 10%}``, largest first."""
    if not traffic:
        return "{}"
    return "{" + ", ".join(f"{d}: {p}%" for d, p in sorted(traffic.items(), key=lambda kv: (-kv[1], kv[0]))) + "}"


def pending_of(flight: Flight) -> Transition | None:
    """The transition written ahead into ``flight`` and not committed yet."""
    data = data_of(flight)
    pending = (data or {}).get("pending")
    return Transition.from_dict(pending) if pending else None


def begin(
    state: ModelState, decision: str, pending: Transition, start: dict[str, Any] | None = None
) -> tuple[ModelState | None, bool]:
    """Write ``pending`` ahead into ``decision``'s rollout flight (``start``: the rollout's data, on
    its first transition). False when the flight is no longer this decision's, already has a
    transition pending (another pass wrote one: it is carried out first), or is no longer at the
    step ``pending.from_step`` that the transition was decided on (a concurrent pass moved it on)."""
    flight = state.flights.get(ROLLOUT)
    if flight is None or flight.decision != decision or flight.status != "submitted":
        return None, False
    data = data_of(flight) or dict(start or {})
    if not data or data.get("pending"):
        return None, False
    if pending.from_step != data.get("step", -1):  # decided on a step that has moved on
        return None, False
    data["pending"] = pending.to_dict()
    return replace(
        state, flights={**state.flights, ROLLOUT: replace(flight, data={**flight.data, ROLLOUT: data})}
    ), True


def commit(state: ModelState, decision: str, pending_id: str, now: datetime) -> tuple[ModelState | None, bool]:
    """Apply the pending transition ``pending_id`` once it is carried out and recorded: a step
    becomes the current one (its bake starts ``now``), a hold is noted, a promote or rollback ends
    the rollout and frees the slot. False when it was committed already."""
    flight = state.flights.get(ROLLOUT)
    if flight is None or flight.decision != decision:
        return None, False
    data = data_of(flight)
    pending = (data or {}).get("pending")
    if data is None or not pending or pending.get("id") != pending_id:
        return None, False
    kind = pending["kind"]
    if kind in ("promote", "rollback"):
        return replace(state, flights={k: f for k, f in state.flights.items() if k != ROLLOUT}), True
    data["pending"] = None
    if kind == "step":
        data.update(step=pending["step"], traffic=pending["target"], step_started=iso(now), held=None)
    else:
        data["held"] = pending["step"]
    return replace(
        state, flights={**state.flights, ROLLOUT: replace(flight, data={**flight.data, ROLLOUT: data})}
    ), True


def swap(state: ModelState, decision: str, pending_id: str, replacement: Transition) -> tuple[ModelState | None, bool]:
    """Replace the pending transition ``pending_id`` (which Azure refused for good) with
    ``replacement`` (a rollback). False when it is no longer pending."""
    flight = state.flights.get(ROLLOUT)
    data = data_of(flight) if flight is not None and flight.decision == decision else None
    if flight is None or data is None or (data.get("pending") or {}).get("id") != pending_id:
        return None, False
    data["pending"] = replacement.to_dict()
    return replace(
        state, flights={**state.flights, ROLLOUT: replace(flight, data={**flight.data, ROLLOUT: data})}
    ), True


def baked(data: dict[str, Any], now: datetime) -> timedelta | None:
    """How long the current step has baked; None before the first step."""
    started = from_iso(data.get("step_started"))
    return None if started is None else now - started


def record_of(
    model: str, flight: Flight, pending: Transition, now: datetime, outcome: str = "submitted"
) -> DecisionRecord:
    """The audit-trail record of a transition, under its deterministic id."""
    action = _RECORDS[pending.kind][0]
    return DecisionRecord(
        id=pending.id,
        model=model,
        action=action,
        outcome="skipped" if pending.kind == "hold" else outcome,
        reason=pending.reason,
        trigger={
            "source": RECONCILER,
            "event_id": f"{RECONCILER}:{flight.job}:{pending.kind}:{pending.step}",
            "event_type": "Tick",
        },
        at=iso(now),
        job={"name": flight.job, "url": None} if flight.job else None,
        details={
            "deploy_decision": flight.decision,
            "step": pending.step,
            "traffic": pending.target,
            **pending.details,
        },
    )
