"""Writing a rollout's transition ahead, for the online and the batch stepper alike, and the check both
start a rollout with (:func:`unprovisioned`: a candidate deployment missing or failed is rolled back, one
still provisioning waits). The transition is written into the model's flight (:func:`handlers.rollout.changes.begin`), then the executor carries it
out (:meth:`handlers.executor.Executor.transition`). A move that gives the candidate more traffic (or
the endpoint) while the model is frozen (:mod:`handlers.freeze`) becomes a hold at the step it was
decided on, recorded once; a rollback is never held."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from handlers.executor import Executor
from handlers.ports import Ledger
from handlers.records import Flight
from handlers.rollout import changes, traffic
from handlers.rollout.progress import RolloutProgress, Transition
from handlers.workspace_ports import Deployments

if TYPE_CHECKING:
    from handlers.freeze import Frozen

log = logging.getLogger(__name__)


def write_ahead(
    ledger: Ledger,
    executor: Executor,
    frozen: Callable[[str, str, datetime], Frozen | None] | None,
    model: str,
    flight: Flight,
    pending: Transition,
    now: datetime,
    start: RolloutProgress | None = None,
) -> dict[str, Any]:
    """Write ``pending`` ahead into ``flight`` (``start``: the progress a flight without one begins
    with), held instead when ``frozen(model, action, now)`` says the move may not go forward now."""
    decision = flight.decision
    if pending.kind in changes.FORWARD and frozen is not None:  # more traffic (or the endpoint): frozen?
        candidate = str(flight.job).partition("/")[2]
        whole = pending.row.promotes or (pending.target or {}).get(candidate) == 100  # the endpoint is its
        why = frozen(model, "promote" if whole else "deploy", now)
        if why is not None:
            held = RolloutProgress.of(flight) or start
            if held is not None and held.held == pending.from_step:
                return {"state": why.state, "step": pending.from_step, "why": why.held}
            pending = Transition.of(
                model, flight, "hold", pending.from_step, pending.from_step, None,
                f"rollout of {flight.job} held: {why.held}", frozen=why.reason,
            )  # fmt: skip
    if not ledger.update_model(model, lambda s: changes.begin(s, decision, pending, start)):
        log.info("rollout %s model=%s: changed meanwhile; left for the next pass", flight.job, model)
        return {"state": "changed_meanwhile"}
    return executor.transition(model, flight, pending, now)


def unprovisioned(
    deployments: Deployments, model: str, flight: Flight, endpoint: str, deployment: str, never: str, **details: Any
) -> Transition | dict[str, Any] | None:
    """None once the candidate ``endpoint/deployment`` is provisioned; while it is not yet, the reconciler
    report's entry; when it does not exist or ended provisioning failed, the rollback to write ahead
    (``never``: what it says was never changed)."""
    state = deployments.deployment_state(endpoint, deployment)
    if state is None or state.lower() in traffic.PROVISIONING_FAILED:
        what = "does not exist" if state is None else f"ended provisioning {state}"
        return Transition.of(
            model, flight, "rollback", -1, -1, None,
            f"rollout of {flight.job} rolled back before any traffic: the deployment {what}; {never}",
            provisioning=state or "missing", **details,
        )  # fmt: skip
    if state.lower() != traffic.PROVISIONED:
        return {"state": "provisioning", "provisioning": state}
    return None
