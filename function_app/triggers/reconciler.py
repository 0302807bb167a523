"""The reconciler's timer: every RETRAIN_RECONCILE_SCHEDULE, one pass over the work in flight
(handlers.reconcile.Reconciler, built once per worker). One instance runs it at a time (the timer's
singleton lock)."""

from __future__ import annotations

import logging

import azure.functions as func

from function_app import telemetry
from function_app.runtime import get_retrainer
from handlers.errors import TransientError

log = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]

RECONCILE_FUNCTION = "reconcile"


@bp.function_name(RECONCILE_FUNCTION)
@bp.timer_trigger(schedule="%RETRAIN_RECONCILE_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def reconcile(timer: func.TimerRequest) -> None:
    """A transient failure is logged and swallowed: the next tick retries. Anything else raises,
    so the failure shows in the function's invocations."""
    if timer.past_due:
        log.info("reconciler tick is past due; running it now")
    with telemetry.span("retrain.reconcile") as span:
        try:
            report = get_retrainer().reconcile()
        except TransientError as exc:
            span.set(outcome="deferred", error=str(exc))
            log.warning("reconciler pass stopped by a transient failure; the next tick retries: %s", exc)
            return
        span.decided([*report.resumed, *report.released, *report.caught])
        for rollout in report.rollouts:
            if rollout.get("record"):  # a transition recorded as a decision
                span.count("rollout", str(rollout.get("state")))
        span.set(
            rollouts=len(report.rollouts),
            deferred=len(report.deferred),
            notified=len(report.notified.get("sent", [])),
            notify_pending=bool(report.notified.get("more")),
        )
