"""Alert guards of rollouts: an Azure Monitor alert the policy ties to a model
(``deploy.rollout.guards.alerts``, :mod:`handlers.guard_rules`) rolls the model's rollout in flight
back when it fires. Not the *slot* guards of :mod:`handlers.guards` (cooldown, budget, single flight).

The alert arrives at ``POST /api/alerts`` and is claimed once (:class:`handlers.service.RetrainService`);
under that claim, for each model whose guard names the alert's rule, :meth:`AlertWatch.handle` either
rolls the rollout back through the operator's path (:meth:`handlers.operate.Operator.roll_back_in_flight`:
written ahead, carried out by the executor, recorded, the transition's trigger naming the alert: rule,
alert id, fired time, severity) or records a skip that says why not: the alert resolved, its target is
neither the workspace nor a resource the guard names, no rollout is in flight, or it fired before the
rollout began. A redelivered alert is the claim's duplicate: one rollback, one record.

What a forged alert (a leaked function key) can do at most: roll back a rollout in flight of a model whose
guard names that rule, about a resource the policy allows, once per rollout. It never starts anything,
never touches traffic without a rollout in flight, never rolls back to the traffic a promotion replaced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from handlers.decisions import in_scope
from handlers.errors import NotApplicable, TransientError
from handlers.operate import Operator
from handlers.operate_rules import Refused
from handlers.plans import Skip, decision_id
from handlers.ports import Ledger
from handlers.records import DecisionRecord, from_iso
from handlers.rollout.progress import ROLLOUT, RolloutProgress
from handlers.signals import ALERT, AlertFired, OperatorRequest, Trigger

if TYPE_CHECKING:
    from handlers.executor import Executor
    from handlers.policy import Policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Watched:
    """What the alert guards did with one alert: ``records`` (rollbacks, written; skips, to be
    written with the alert's claim: ``unwritten``), and ``rolled_back``: the models whose rollout it
    rolled back (their retraining on the same rule gives way)."""

    records: list[DecisionRecord]
    unwritten: list[DecisionRecord]
    rolled_back: dict[str, str]  # model -> the rollback decision's id


def fired_time(text: str) -> datetime | None:
    """``firedDateTime`` as sent (e.g. ``2026-11-25T06:30:00.0000000Z``); None when unreadable."""
    try:
        return from_iso(text)
    except ValueError:
        return None


class AlertWatch:
    """The alert guards of every model of ``policy`` (those whose ``deploy.rollout.guards.alerts``
    name the alert's rule), over the same ledger, executor and operator as the rest of the service."""

    def __init__(
        self, policy: Policy, ledger: Ledger, executor: Executor, operator: Operator, workspaces: frozenset[str]
    ) -> None:
        self.policy = policy
        self.ledger = ledger
        self.executor = executor
        self.operator = operator
        self.workspaces = workspaces

    def guarding(self, signal: AlertFired) -> list[str]:
        """The models whose rollout guard names the alert's rule (case-insensitively, as Azure does)."""
        rule = signal.rule.strip().lower()
        return [
            name
            for name, mp in self.policy.models.items()
            if mp.deploy is not None and rule in {a.strip().lower() for a in mp.deploy.rollout.guards.alerts}
        ]

    def handle(self, signal: AlertFired, now: datetime, again: bool) -> Watched:
        """Each guarding model's answer to the alert. A rollback an earlier delivery of it carried out
        stands (its worker died, or its claim was given back, e.g. when another model's rollout was
        busy: looked up whatever the claim says); ``again``: an earlier delivery took the claim and
        never finished it, so a skip it decided stands too. Raises
        TransientError when a rollout's transition is being carried out (the action group retries a 503)."""
        records: list[DecisionRecord] = []
        unwritten: list[DecisionRecord] = []
        rolled_back: dict[str, str] = {}
        for model in self.guarding(signal):
            done = self._done_before(model, signal)
            if done is not None:
                records.append(done)
                if done.action == "rollback":
                    rolled_back[model] = done.id
                continue
            answer = self._answer(model, signal, now)
            if answer is None:
                continue
            if isinstance(answer, DecisionRecord):
                records.append(answer)
                rolled_back[model] = answer.id
                continue
            skip = Skip(decision_id("guard", model, signal.trigger), model, answer, signal.trigger)
            recorded = self.executor.recorded(skip) if again else None
            record = recorded or self.executor.record(skip, "skipped", now, guard="alert", rule=signal.rule)
            records.append(record)
            if recorded is None:
                unwritten.append(record)
        return Watched(records, unwritten, rolled_back)

    def _answer(self, model: str, signal: AlertFired, now: datetime) -> DecisionRecord | str | None:
        """The rollback's record, or why there is none (None: the model's retraining on the same rule
        answers for it)."""
        rule = signal.rule
        where = f"models.{model}.deploy.rollout.guards.alerts"
        if not signal.fired:
            return f"alert {rule!r} {signal.condition.lower() or 'not fired'}: only a fired alert rolls back ({where})"
        mp = self.policy.models[model]
        assert mp.deploy is not None  # guarding() keeps models with deploy only
        named = mp.deploy.rollout.guards.alert_targets
        if not any(in_scope(t, self.workspaces, named) for t in signal.targets):
            targets = ", ".join(t[:200] for t in signal.targets[:3]) or "no resource"
            return (
                f"alert {rule!r} fired for {targets}, which is neither this service's workspace nor a resource in it: "
                f"not acted on; to act on alerts about another resource, list its id under "
                f"models.{model}.deploy.rollout.guards.alert_targets"
            )
        flight = self.ledger.get_model(model).flights.get(ROLLOUT)
        if flight is None:
            if rule.strip().lower() in {a.strip().lower() for a in mp.alerts}:
                return None  # no rollout to guard: the alert retrains the model, as its 'alerts' say
            return f"alert {rule!r} fired, but no rollout of {model} is in flight: nothing to roll back ({where})"
        fired = fired_time(signal.fired_at)
        began = from_iso(flight.since)
        if fired is not None and began is not None and fired < began:
            return (
                f"alert {rule!r} fired at {signal.fired_at}, before the rollout of {model} in flight began ({flight.since}): "
                "it is not about the candidate; not rolled back"
            )
        progress = RolloutProgress.of(flight)
        pending = None if progress is None else progress.pending
        ours = pending is not None and (pending.trigger or {}).get("event_id") == signal.trigger.event_id
        if flight.status != "submitted" or not flight.job or (pending is not None and not ours):
            raise TransientError(
                f"alert {rule!r}: a transition of the rollout of {model} is being carried out; send the alert again"
            )
        request = OperatorRequest(self._trigger(signal), model, "rollback", self._why(signal, where))
        try:
            done = self.operator.roll_back_in_flight(request, now)
        except NotApplicable as exc:  # the rollout moved between the read and the write
            raise TransientError(f"alert {rule!r}: {exc}") from exc
        if isinstance(done, Refused):
            return f"alert {rule!r} fired: {done.why} ({where})"
        log.info("alert guard %s model=%s: rollout %s rolled back by %s", rule, model, flight.job, done.id)
        return done

    def _done_before(self, model: str, signal: AlertFired) -> DecisionRecord | None:
        """The record an earlier delivery of this alert wrote for ``model`` (its rollback, or its skip)."""
        for record in self.ledger.decisions(model, 20, event_id=signal.trigger.event_id):
            if record.trigger.get("channel") == ALERT and record.id.startswith(("mr-", "gu-")):
                return record
        return None

    @staticmethod
    def _trigger(signal: AlertFired) -> Trigger:
        """The alert's trigger, its caller the alert: what the rollback's record names."""
        caller = (
            ("kind", "alert"),
            ("name", f"alert {signal.rule}"),
            ("rule", signal.rule[:260]),
            ("alert_id", signal.alert_id),
            ("fired", signal.fired_at),
            ("severity", signal.severity),
        )
        t = signal.trigger
        return Trigger(t.source, t.event_id, t.event_type, caller=tuple((k, v) for k, v in caller if v), channel=ALERT)

    @staticmethod
    def _why(signal: AlertFired, where: str) -> str:
        said = ", ".join(
            filter(None, (signal.severity, signal.signal_type, signal.fired_at and f"at {signal.fired_at}"))
        )
        return f"Azure Monitor alert {signal.rule!r} fired ({said}); a rollout guard ({where})"
