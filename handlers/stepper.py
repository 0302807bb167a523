"""The reconciler's rollout pass: one transition per rollout flight, never a wait.

For a model whose ``rollout`` flight is ``submitted`` (a candidate deployment was started at 0%),
each reconciler pass does at most one of: wait for the deployment to be provisioned (a failed one
is rolled back, recorded); give the candidate its first step; after a step's bake, check its health
and go to the next step, promote it (at 100%) or roll the endpoint back to the traffic it had before
the rollout. The rules are pure (:mod:`handlers.rollout`); this module reads the facts through the
ports and writes each transition ahead into the ledger before acting on it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from handlers import rollout
from handlers.errors import PermanentError
from handlers.ports import HealthReading
from handlers.records import Flight, from_iso, iso

if TYPE_CHECKING:
    from handlers.policy import RolloutRule
    from handlers.service import RetrainService

log = logging.getLogger(__name__)

NO_HEALTH = "no health port configured; no data"


def _fmt(traffic: dict[str, int] | None) -> str:
    if not traffic:
        return "{}"
    return "{" + ", ".join(f"{d}: {p}%" for d, p in sorted(traffic.items(), key=lambda kv: (-kv[1], kv[0]))) + "}"


class RolloutStepper:
    """Moves one rollout flight on by one transition (:meth:`advance`)."""

    def __init__(self, service: RetrainService) -> None:
        self.service = service

    def _rule(self, model: str) -> RolloutRule:
        from handlers.policy import RolloutRule  # pydantic: loaded on the reconciler's path only

        mp = self.service.policy.models.get(model)
        return mp.deploy.rollout if mp is not None and mp.deploy is not None else RolloutRule()

    def advance(self, model: str, flight: Flight, now: datetime) -> dict[str, Any]:
        """One transition of ``flight``; what it did, for the report. Raises TransientError (and
        PermanentError from a read) for the reconciler to defer: nothing is decided on a guess."""
        endpoint, _, deployment = str(flight.job).partition("/")
        entry: dict[str, Any] = {"model": model, "decision": flight.decision, "deployment": str(flight.job)}
        data = rollout.data_of(flight)
        if data is not None and data.get("pending"):
            return {**entry, **self._carry_out(model, flight, data["pending"], endpoint, now)}
        rule = self._rule(model)
        if data is None:
            return {**entry, **self._start(model, flight, endpoint, deployment, rule, now)}
        step, steps = int(data["step"]), [int(p) for p in data["steps"]]
        elapsed = rollout.baked(data, now)
        started = from_iso(data.get("step_started"))
        if elapsed is None or started is None:  # pragma: no cover - a step is always written with its start
            raise PermanentError(f"rollout of {flight.job} has no step start; it cannot be judged")
        entry.update(step=step, traffic=data.get("traffic"))
        if elapsed < rule.bake:
            return {**entry, "state": "baking", "until": iso(started + rule.bake)}
        reading = self._reading(endpoint, deployment, started, now)
        verdict = rollout.judge(rule, reading, elapsed)
        log.info(
            "rollout %s model=%s step %d (%d%%): %s -> %s: %s",
            flight.job,
            model,
            step + 1,
            steps[step],
            verdict.status,
            verdict.next,
            verdict.why,
        )
        if verdict.next == "wait":
            return {**entry, "state": "waiting_for_traffic", "why": verdict.why}
        if verdict.next == "hold" and data.get("held") == step:
            return {**entry, "state": "held", "why": verdict.why}
        at = f"at step {step + 1} of {len(steps)} ({steps[step]}%)"
        if verdict.next == "hold":
            pending = rollout.transition(
                model,
                flight,
                "hold",
                step,
                None,
                f"rollout of {flight.job} held {at}: {verdict.why}",
                health=verdict.as_dict(),
            )
        elif verdict.next == "rollback":
            original = data.get("original") or {}
            pending = rollout.transition(
                model,
                flight,
                "rollback",
                step,
                original,
                f"rollout of {flight.job} rolled back {at}: {verdict.why}; traffic back to {_fmt(original)}",
                health=verdict.as_dict(),
            )
        elif step + 1 >= len(steps):
            pending = rollout.transition(
                model,
                flight,
                "promote",
                step,
                None,
                f"candidate {flight.job} promoted: healthy {at}: {verdict.why}",
                health=verdict.as_dict(),
            )
        else:
            target = rollout.split(data.get("original") or {}, deployment, steps[step + 1])
            pending = rollout.transition(
                model,
                flight,
                "step",
                step + 1,
                target,
                f"rollout of {flight.job}: healthy {at} ({verdict.why}); step {step + 2} of {len(steps)}: "
                f"traffic {_fmt(data.get('traffic'))} -> {_fmt(target)}",
                health=verdict.as_dict(),
            )
        pending["from"] = step
        return {**entry, **self._write_ahead(model, flight, pending, endpoint, now)}

    def _start(
        self, model: str, flight: Flight, endpoint: str, deployment: str, rule: RolloutRule, now: datetime
    ) -> dict[str, Any]:
        actions = self.service.actions
        state = actions.deployment_state(endpoint, deployment)
        start = {
            "endpoint": endpoint,
            "deployment": deployment,
            "steps": list(rule.steps),
            "original": None,
            "step": -1,
        }
        if state is None or state.lower() in rollout.PROVISIONING_FAILED:
            what = "does not exist" if state is None else f"ended provisioning {state}"
            pending = rollout.transition(
                model,
                flight,
                "rollback",
                -1,
                None,
                f"rollout of {flight.job} rolled back before any traffic: the deployment {what}; the endpoint's "
                "traffic was never changed",
                provisioning=state or "missing",
            )
            pending["from"] = -1
            return self._write_ahead(model, flight, pending, endpoint, now, start)
        if state.lower() != rollout.PROVISIONED:
            return {"state": "provisioning", "provisioning": state}
        original = rollout.live(actions.endpoint_traffic(endpoint))
        target = rollout.split(original, deployment, rule.steps[0])
        pending = rollout.transition(
            model,
            flight,
            "step",
            0,
            target,
            f"deployment {flight.job} is provisioned; step 1 of {len(rule.steps)}: traffic {_fmt(original)} -> "
            f"{_fmt(target)}",
            original=original,
        )
        pending["from"] = -1  # a concurrent pass that started the rollout first wins
        return self._write_ahead(
            model, flight, pending, endpoint, now, {**start, "original": original, "traffic": original}
        )

    def _reading(self, endpoint: str, deployment: str, since: datetime, until: datetime) -> HealthReading:
        health = self.service.health
        if health is None:
            return HealthReading(endpoint, deployment, iso(since), iso(until), 0, 0, None, "none", "none", NO_HEALTH)
        return health.check(endpoint, deployment, since, until)

    def _write_ahead(
        self,
        model: str,
        flight: Flight,
        pending: dict[str, Any],
        endpoint: str,
        now: datetime,
        start: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        decision = flight.decision
        if not self.service.ledger.update_model(model, lambda s: rollout.begin(s, decision, pending, start)):
            log.info("rollout %s model=%s: changed meanwhile; left for the next pass", flight.job, model)
            return {"state": "changed_meanwhile"}
        return self._carry_out(model, flight, pending, endpoint, now)

    def _carry_out(
        self, model: str, flight: Flight, pending: dict[str, Any], endpoint: str, now: datetime
    ) -> dict[str, Any]:
        """Set the pending transition's traffic (not sent again if the endpoint has it), record it,
        commit it. A refusal by Azure turns a step or promotion into a rollback; a refused rollback
        is recorded as failed and the slot freed, for an operator to look at."""
        ledger, decision = self.service.ledger, flight.decision
        outcome = "submitted"
        target = pending.get("target")
        if target is not None:
            try:
                changed = self.service.actions.set_traffic(endpoint, dict(target))
            except PermanentError as exc:
                if pending["kind"] != "rollback":
                    now_held = ledger.get_model(model).flights.get(rollout.ROLLOUT)  # holds the start, if just written
                    original = (rollout.data_of(now_held or flight) or {}).get("original")
                    replacement = rollout.transition(
                        model,
                        flight,
                        "rollback",
                        int(pending["step"]),
                        original,
                        f"rollout of {flight.job} rolled back: setting traffic {_fmt(target)} was refused: {exc}",
                        refused=str(exc),
                    )
                    if ledger.update_model(model, lambda s: rollout.swap(s, decision, pending["id"], replacement)):
                        return self._carry_out(model, flight, replacement, endpoint, now)
                    return {"state": "changed_meanwhile"}
                outcome = "failed"
                pending = {**pending, "reason": f"{pending['reason']}; failed: {exc}; set the traffic by hand"}
                changed = False
            log.info(
                "rollout %s model=%s: traffic %s (%s)",
                flight.job,
                model,
                _fmt(target),
                "sent" if changed else "already so",
            )
        record = rollout.record_of(model, flight, pending, now, outcome)
        ledger.put_decision(record)  # recorded first: a crash before the commit repeats both
        ledger.update_model(model, lambda s: rollout.commit(s, decision, pending["id"], now))
        log.info(
            "decision %s model=%s action=%s outcome=%s: %s",
            record.id,
            model,
            record.action,
            record.outcome,
            record.reason,
        )
        state = {"step": "stepped", "promote": "promoted", "rollback": "rolled_back", "hold": "held"}[pending["kind"]]
        if outcome == "failed":
            state = "rollback_failed"
        return {"state": state, "step": pending["step"], "traffic": target, "record": record.id}
