"""The changes to a model's rollout flight that the ledger applies atomically (each a function of
the model's state, for :meth:`handlers.ports.Ledger.update_model`): a transition written ahead
(:func:`begin`), swapped for a rollback (:func:`swap`), a smoke test's verdict written ahead in place of
the very transition its pass carried out (:func:`judge`), an operator's transition in place of a smoke
test not judged yet (:func:`supersede`), committed (:func:`commit`); and the decision record of a
transition (:func:`record_of`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from handlers.records import DecisionRecord, Flight, ModelState, iso
from handlers.rollout import supersede as supersede_rules
from handlers.rollout.progress import RECONCILER, ROLLOUT, RolloutProgress, Transition

FORWARD = ("step", "mirror", "promote")  # the reconciler's moves that give a candidate more traffic (or the endpoint)


def _with(state: ModelState, flight: Flight, progress: RolloutProgress) -> ModelState:
    return replace(state, flights={**state.flights, ROLLOUT: progress.kept_in(flight)})


def begin(
    state: ModelState, decision: str, pending: Transition, start: RolloutProgress | None = None
) -> tuple[ModelState | None, bool]:
    """Write ``pending`` ahead into ``decision``'s rollout flight (``start``: the rollout's progress,
    on its first transition, laid over what the flight holds already, e.g. a pause). False when the
    flight is no longer this decision's, already has a transition pending (another pass wrote one:
    it is carried out first), or is no longer at the step ``pending.from_step`` that the transition
    was decided on (a concurrent pass moved it on), or when an operator paused it since the reconciler decided
    to move it forward (a step, the shadow stage, a promotion: :data:`FORWARD`), in this same write."""
    flight = state.flights.get(ROLLOUT)
    if flight is None or flight.decision != decision or flight.status != "submitted":
        return None, False
    held = RolloutProgress.of(flight)
    progress = held if start is None else start.started_over(held)
    if progress is None or progress.pending is not None:
        return None, False
    if pending.from_step != progress.step:  # decided on a step that has moved on
        return None, False
    if progress.paused and pending.trigger is None and pending.kind in FORWARD:  # paused meanwhile: it stays
        return None, False
    if pending.kind == "mirror" and progress.mirror is not None:  # a concurrent pass started the shadow stage
        return None, False
    if pending.kind == "compare" and progress.compare is not None:  # a concurrent pass started the comparison
        return None, False
    return _with(state, flight, replace(progress, pending=pending)), True


def commit(state: ModelState, decision: str, pending_id: str, now: datetime) -> tuple[ModelState | None, bool]:
    """Apply the pending transition ``pending_id`` once it is carried out and recorded, by its
    kind's rule (:data:`handlers.rollout.progress.KINDS`): a step becomes the current one (its bake
    starts ``now``), a hold or a pause is noted, a resume clears the pause and restarts the step's
    bake, a promote or rollback ends the rollout and frees the slot. A promotion keeps the traffic
    it replaced (``ModelState.kept``: what an operator's rollback restores once no rollout is in
    flight); the rollback that restores it forgets it. The end of a rollout makes the model's
    retirement due (``ModelState.retire_due``). False when it was committed already."""
    flight = state.flights.get(ROLLOUT)
    if flight is None or flight.decision != decision:
        return None, False
    progress = RolloutProgress.of(flight)
    pending = None if progress is None else progress.pending
    if progress is None or pending is None or pending.id != pending_id:
        return None, False
    kind = pending.row
    if kind.then is not None:
        return _with(state, flight, kind.then(replace(progress, pending=None), pending, iso(now))), True
    kept = state.kept
    if kind.promotes and progress.original:
        kept = {
            "endpoint": progress.endpoint or None,
            "traffic": dict(progress.original),
            "replaced_by": progress.deployment or None,
            "decision": pending_id,
            "at": iso(now),
        }
    elif kind.rolls_back and progress.restores_kept:
        kept = None
    flights = {k: f for k, f in state.flights.items() if k != ROLLOUT}
    # a promotion demoted a deployment, a rollback rejected a candidate: the reconciler looks (retire)
    return replace(state, flights=flights, kept=kept, retire_due=f"{iso(now)}#{pending_id}"), True


def swap(state: ModelState, decision: str, pending_id: str, replacement: Transition) -> tuple[ModelState | None, bool]:
    """Replace the pending transition ``pending_id`` (which Azure refused for good) with
    ``replacement`` (a rollback). False when it is no longer pending."""
    flight = state.flights.get(ROLLOUT)
    progress = RolloutProgress.of(flight) if flight is not None and flight.decision == decision else None
    if flight is None or progress is None or progress.pending is None or progress.pending.id != pending_id:
        return None, False
    return _with(state, flight, replace(progress, pending=replacement)), True


def judge(state: ModelState, decision: str, carried: Transition, verdict: Transition) -> tuple[ModelState | None, bool]:
    """Write a smoke test's ``verdict`` (the judged transition, or the ``smoke-failed`` rollback, or the
    deferral noted) in place of ``carried``, the very transition the pass sent the requests for. False
    when the flight holds another one meanwhile: an operator's transition superseded it
    (:func:`supersede`), and the verdict is dropped."""
    flight = state.flights.get(ROLLOUT)
    progress = RolloutProgress.of(flight) if flight is not None and flight.decision == decision else None
    if flight is None or progress is None or not supersede_rules.same(progress.pending, carried):
        return None, False
    return _with(state, flight, replace(progress, pending=verdict)), True


def supersede(
    state: ModelState,
    decision: str,
    replaced: Transition,
    operator: Transition,
    start: RolloutProgress | None = None,
) -> tuple[ModelState | None, bool]:
    """Write an operator's transition in place of ``replaced``, a smoke test not judged yet
    (:func:`handlers.rollout.supersede.supersedable`), as :func:`begin` writes one ahead. False when
    the flight no longer holds that very transition, unjudged: the smoke test's verdict was written
    first (:func:`judge`), or the rollout moved on or ended. The flight counts it
    (``RolloutProgress.superseded``): a smoke test written again later carries the count, so the
    superseded one's verdict never lands on it (:func:`judge`), even when both were written at one instant."""
    flight = state.flights.get(ROLLOUT)
    if flight is None or flight.decision != decision or flight.status != "submitted":
        return None, False
    held = RolloutProgress.of(flight)
    pending = None if held is None else held.pending
    if held is None or pending is None or not supersede_rules.same(pending, replaced):
        return None, False
    if not supersede_rules.supersedable(pending) or operator.from_step != held.step:
        return None, False
    progress = held if start is None else start.started_over(held)
    return _with(state, flight, replace(progress, pending=operator, superseded=held.superseded + 1)), True


def record_of(
    model: str, flight: Flight, pending: Transition, now: datetime, outcome: str = "submitted"
) -> DecisionRecord:
    """The audit-trail record of a transition, under its deterministic id."""
    kind = pending.row
    return DecisionRecord(
        id=pending.id,
        model=model,
        action=kind.action,
        outcome="skipped" if kind.skipped else "failed" if kind.fails else outcome,
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
            **({} if pending.mirror is None else {"mirror": pending.mirror}),  # the mirror traffic it set
            **pending.details,
        },
    )
