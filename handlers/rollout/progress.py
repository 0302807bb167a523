"""A rollout's steps, as pure rules: the traffic split of each step and the changes to a model's
rollout flight that the ledger applies atomically (the health verdict is :mod:`handlers.analysis`'s).

A passing candidate becomes a deployment at 0% beside the live one (its rollout flight is
``submitted``). The reconciler then moves it on, one transition per pass
(:class:`handlers.rollout.stepper.RolloutStepper`, run by :class:`handlers.reconcile.Reconciler`): once the
deployment is provisioned, the candidate gets ``steps[0]`` percent of the traffic; on each pass the
step's window is judged against the baseline: healthy after the ``bake`` -> the next step (at 100%:
``promote``, the flight is released), unhealthy (at any look) -> ``rollback`` (the endpoint gets back
the traffic it had before the rollout, the flight is released). An operator's ``pause``, ``resume``,
``promote-now`` and ``manual-rollback`` (:mod:`handlers.operate`) are transitions like the others.

Every transition (:class:`Transition`) is written ahead into the flight (``data["rollout"]["pending"]``) before it
touches Azure, carried out, recorded under a deterministic id, then committed. A crash anywhere
leaves the pending transition for the next pass, which carries out the same one again: the same
traffic (which the adapter does not send twice), the same record id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from handlers.keys import digest
from handlers.records import DecisionRecord, Flight, ModelState, iso

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
    "pause": ("pause", "pa"),  # an operator's: the reconciler leaves the rollout as it is
    "resume": ("resume", "re"),  # an operator's: the step goes on, its bake restarted
    "promote-now": ("promote", "pn"),  # an operator's: the candidate gets 100% now
    "manual-rollback": ("rollback", "mr"),  # an operator's: the original (or the kept) traffic back
}
ENDS = frozenset({"promote", "rollback", "promote-now", "manual-rollback"})  # kinds that free the slot
PROMOTES = frozenset({"promote", "promote-now"})
ROLLS_BACK = frozenset({"rollback", "manual-rollback"})


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
    a transition a dead pass left pending writes the same record. An operator's transition carries
    the ``trigger`` of the request (who asked), and its id depends on that request too."""

    id: str
    kind: str
    step: int
    from_step: int
    target: dict[str, int] | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    trigger: dict[str, Any] | None = None

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
        *,
        trigger: Mapping[str, Any] | None = None,
        **details: Any,
    ) -> Transition:
        prefix = _RECORDS[kind][1]
        asked = () if trigger is None else (str(trigger.get("event_id")),)
        return cls(
            id=f"{prefix}-{digest(ROLLOUT, model, flight.decision, kind, str(step), *asked)}",
            kind=kind,
            step=step,
            from_step=from_step,
            target=None if target is None else dict(target),
            reason=reason,
            details={k: v for k, v in details.items() if v is not None},
            trigger=None if trigger is None else dict(trigger),
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
            trigger=self.trigger,
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
            "trigger": None if self.trigger is None else dict(self.trigger),
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
            trigger=dict(data["trigger"]) if data.get("trigger") else None,
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
    its first transition, laid over what the flight holds already, e.g. a pause). False when the flight is no longer this decision's, already has a
    transition pending (another pass wrote one: it is carried out first), or is no longer at the
    step ``pending.from_step`` that the transition was decided on (a concurrent pass moved it on)."""
    flight = state.flights.get(ROLLOUT)
    if flight is None or flight.decision != decision or flight.status != "submitted":
        return None, False
    data = {**(data_of(flight) or {}), **(start or {})}
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
    becomes the current one (its bake starts ``now``), a hold or a pause is noted, a resume clears
    the pause and restarts the step's bake, a promote or rollback ends the rollout and frees the
    slot. A promotion keeps the traffic it replaced (``ModelState.kept``: what an operator's rollback
    restores once no rollout is in flight); the rollback that restores it forgets it. The end of a
    rollout makes the model's retirement due (``ModelState.retire_due``). False when it was
    committed already."""
    flight = state.flights.get(ROLLOUT)
    if flight is None or flight.decision != decision:
        return None, False
    data = data_of(flight)
    pending = (data or {}).get("pending")
    if data is None or not pending or pending.get("id") != pending_id:
        return None, False
    kind = pending["kind"]
    if kind in ENDS:
        kept = state.kept
        if kind in PROMOTES and data.get("original"):
            kept = {
                "endpoint": data.get("endpoint"),
                "traffic": dict(data["original"]),
                "replaced_by": data.get("deployment"),
                "decision": pending_id,
                "at": iso(now),
            }
        elif kind in ROLLS_BACK and data.get("restores_kept"):
            kept = None
        flights = {k: f for k, f in state.flights.items() if k != ROLLOUT}
        # a promotion demoted a deployment, a rollback rejected a candidate: the reconciler looks (retire)
        return replace(state, flights=flights, kept=kept, retire_due=f"{iso(now)}#{pending_id}"), True
    data["pending"] = None
    if kind == "step":
        data.update(step=pending["step"], traffic=pending["target"], step_started=iso(now), held=None)
    elif kind == "pause":
        data["paused"] = {"at": iso(now), "by": (pending.get("trigger") or {}).get("caller"), "decision": pending_id}
    elif kind == "resume":
        data.update(paused=None, held=None)
        if int(data.get("step", -1)) >= 0:
            data["step_started"] = iso(now)  # the step's bake starts again
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
        trigger=dict(pending.trigger)
        if pending.trigger
        else {
            "source": RECONCILER,
            "event_id": f"{RECONCILER}:{flight.job}:{pending.kind}:{pending.step}",
            "event_type": "Tick",
        },
        at=iso(now),
        job={"name": flight.job, "url": None} if flight.job else None,
        details={
            "deploy_decision": flight.decision,
            "step": pending.step,
            "from_step": pending.from_step,  # the step its health verdict (if any) judged
            "traffic": pending.target,
            **pending.details,
        },
    )
