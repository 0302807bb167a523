"""Operator control of a model's rollout: roll back, promote, pause and resume.

Each request is a decision like the reconciler's: a :class:`handlers.rollout.progress.Transition` written
ahead into the model's rollout flight, carried out by the executor (:meth:`Executor.transition`:
traffic, then the record, then the commit), so an operator never sets traffic without a record and a
worker that dies in between leaves the transition for the next reconciler pass. The transition
carries the request's trigger (who asked), and its id depends on the request.

- ``rollback``: the rollout in flight: the endpoint gets its original traffic back (before the first
  step: nothing to change), the slot is freed. No rollout in flight: the traffic the last promotion
  replaced (``ModelState.kept``) comes back, as far as those deployments still exist on the endpoint
  (a rollout flight of its own, opened and ended by the one transition).
- ``promote``: the remaining steps are skipped: the candidate gets 100%, the slot is freed.
- ``pause``: the reconciler leaves the rollout as it is (no look, no step) until ``resume``, which
  continues the step and restarts its bake.

:func:`handlers.operate_rules.plan` is the pure rule (facts in, a transition or a refusal out);
:class:`Operator` reads the facts, claims the request (an ``Idempotency-Key`` gives the same record
again), writes the transition ahead and has the executor carry it out. A transition pending is carried
out first (409, try again), but a smoke test not judged yet (deferred by an outage, a 401 or a 429, or its
requests unanswered so far): the operator's transition supersedes it, written in its place on the
condition that the flight still holds it unjudged (:mod:`handlers.rollout.supersede`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from handlers import freeze
from handlers.approval_rules import refusal, requesters
from handlers.approval_rules import who as named
from handlers.claims import LEASE, Claims
from handlers.creators import Creators, refuse_creators, sources
from handlers.errors import Forbidden, InvalidInput, NotApplicable, NotFound, TransientError
from handlers.executor import Executor
from handlers.operate_rules import Facts, Planned, Refused, plan, who
from handlers.ports import Ledger
from handlers.records import DecisionRecord, ModelState
from handlers.rollout import changes
from handlers.rollout.progress import ROLLOUT, RolloutProgress
from handlers.rollout.traffic import PROVISIONED
from handlers.signals import OperatorRequest
from handlers.workspace_ports import Deployments

if TYPE_CHECKING:
    from handlers.policy import Policy

log = logging.getLogger(__name__)

ACTIONS = ("rollback", "promote", "pause", "resume")


def _changed_meanwhile(model: str) -> NotApplicable:
    return NotApplicable(f"the rollout of {model} changed meanwhile; look at it again (GET /api/models) and retry")


def open_flight(state: ModelState, planned: Planned) -> tuple[ModelState | None, bool]:
    """Open the rollback's own rollout flight, with its transition written ahead; False when a
    rollout is in flight meanwhile."""
    if ROLLOUT in state.flights:
        return None, False
    return replace(state, flights={**state.flights, ROLLOUT: planned.flight}), True


class Operator:
    """Carries out operator requests on rollouts (:meth:`handle`) by the write-ahead protocol the
    stepper uses too: the transition is written ahead, then carried out by the executor. Validated
    before anything is claimed: an unknown model is NotFound (404), a model without ``deploy``
    InvalidInput (400); an action that does not apply is NotApplicable (a Conflict, 409)."""

    def __init__(
        self,
        policy: Policy,
        ledger: Ledger,
        deployments: Deployments,
        executor: Executor,
        clock: Callable[[], datetime],
        lease: timedelta = LEASE,
    ) -> None:
        self.policy = policy
        self.ledger = ledger
        self.deployments = deployments
        self.executor = executor
        self.clock = clock
        self.lease = lease
        self.claims = Claims(ledger, lease)

    def handle(self, request: OperatorRequest) -> DecisionRecord:
        self._check(request)
        done = self.claims.answered(request.trigger)
        if done is not None:
            return done
        now, checks = self.clock(), list[dict[str, Any]]()
        state = self.ledger.get_model(request.model)
        if request.action == "promote":  # a rollback, a pause and a resume are never frozen
            held = freeze.frozen(state.frozen, self.policy.freeze_windows(request.model), "promote", now)
            if held is not None:
                raise NotApplicable(f"{request.model} is frozen by {held.reason}; lift the freeze first to promote")
            checks = self._four_eyes(request, state)
        planned = plan(request, state, self._facts(request, state), now)
        if checks and isinstance(planned, Planned) and not planned.written:  # what four eyes compared, recorded
            t = planned.transition
            planned = replace(planned, transition=replace(t, details={**t.details, "approval": {"creators": checks}}))
        if isinstance(planned, Refused):
            # this very request, when its worker died after writing the transition ahead and a
            # reconciler pass carried it out (its claim never finished): its record, not a refusal
            finished = self.claims.bound_among(request.trigger, self.ledger.decisions(request.model, 20))
            if finished is not None:
                return finished
            log.info("operator %s model=%s refused: %s", request.action, request.model, planned.why)
            raise NotApplicable(planned.why)

        def work(_again: bool) -> tuple[list[DecisionRecord], list[DecisionRecord]]:
            return [self._carry_out(request, planned, now)], []  # a pending transition stays on error

        busy = f"request {request.trigger.event_id} is being carried out; try again in a moment"
        answer = self.claims.run(request.trigger, now, work, busy=busy)
        if not answer.records:  # carried out meanwhile by another instance, its record not readable yet
            raise TransientError(f"request {request.trigger.event_id} was carried out meanwhile; ask again")
        return answer.records[0]

    def roll_back_in_flight(self, request: OperatorRequest, now: datetime) -> DecisionRecord | Refused:
        """A rollback of the rollout in flight only (never to the traffic a promotion kept), under a
        claim its caller holds: an alert guard's (:mod:`handlers.rollout.watch`), whose trigger the
        transition carries. Its record, or why it does not apply; NotApplicable when the rollout
        changed between the read and the write."""
        state = self.ledger.get_model(request.model)
        if ROLLOUT not in state.flights:
            return Refused(f"no rollout of {request.model} is in flight")
        planned = plan(request, state, Facts(), now)
        if isinstance(planned, Refused) or planned.opens:
            return planned if isinstance(planned, Refused) else Refused(f"no rollout of {request.model} is in flight")
        return self._carry_out(request, planned, now)

    def _four_eyes(self, request: OperatorRequest, state: ModelState) -> list[dict[str, Any]]:
        """A promotion that ``deploy.approval.promote`` holds for a person is its approval: by a caller the
        rule allows (the approver role; four eyes: signed in, and not the caller who asked for the deploy;
        :func:`handlers.approval_rules.refusal`), nor who created what the deploy comes from (the candidate run,
        what started its retrain: :func:`handlers.creators.sources`). Returns what was compared of those
        creators, for the promotion's record (``details.approval.creators``), as an approval records it."""
        deploy, flight = self.policy.models[request.model].deploy, state.flights.get(ROLLOUT)
        rule = deploy.approval if deploy is not None else None
        if rule is None or not rule.promote or flight is None:
            return []
        asked = self.ledger.get_decision(flight.decision, request.model)
        key, caller = f"models.{request.model}.deploy.approval", dict(request.trigger.caller)
        for what, requester in requesters(asked, self.ledger.get_decision) if asked is not None else [("this", {})]:
            why = refusal(key, rule.four_eyes, rule.approver_role, requester, caller, "promote", what)
            if why is not None:
                raise Forbidden(why)
        found = sources(asked, self.ledger.get_decision) if asked is not None and rule.four_eyes else []
        if not found:
            return []
        jobs = self.executor.jobs  # the authors of the candidate promote nothing of theirs either (handlers.creators)
        refused = f"whose candidate this rollout serves, and may not promote it too ({key}.four_eyes)"
        return refuse_creators(jobs if isinstance(jobs, Creators) else None, found, caller, named(caller), refused)

    def _check(self, request: OperatorRequest) -> None:
        mp = self.policy.models.get(request.model)
        if mp is None:
            raise NotFound(f"model {request.model!r} is not in the policy; known: {', '.join(self.policy.models)}")
        if mp.deploy is None:
            raise InvalidInput(f"model {request.model!r} has no 'deploy' section in the policy; it has no rollouts")
        if request.action not in ACTIONS:
            raise InvalidInput(f"action {request.action!r} is not one of {', '.join(ACTIONS)}")

    def _facts(self, request: OperatorRequest, state: ModelState) -> Facts:
        """Only what the rule needs for this action, read through the Deployments port."""
        flight = state.flights.get(ROLLOUT)
        if flight is not None and flight.job:
            progress = RolloutProgress.of(flight)
            if request.action == "promote" and (progress is None or progress.step < 0):
                endpoint, _, candidate = flight.job.partition("/")
                return Facts(
                    self.deployments.deployment_state(endpoint, candidate), self.deployments.endpoint_traffic(endpoint)
                )
            return Facts()
        if request.action != "rollback" or not state.kept or not state.kept.get("endpoint"):
            return Facts()
        endpoint = str(state.kept["endpoint"])
        existing = frozenset(
            d
            for d in dict(state.kept.get("traffic") or {})
            if (self.deployments.deployment_state(endpoint, d) or "").lower() == PROVISIONED
        )
        return Facts(None, self.deployments.endpoint_traffic(endpoint), existing)

    def _carry_out(self, request: OperatorRequest, planned: Planned, now: datetime) -> DecisionRecord:
        model, flight, t = request.model, planned.flight, planned.transition
        replaced = planned.supersedes
        if planned.opens:
            ok = self.ledger.update_model(model, lambda s: open_flight(s, planned))
        elif planned.written:
            ok = True
        elif replaced is not None:  # in place of the smoke test not judged yet, unless its verdict came first
            ok = self.ledger.update_model(
                model, lambda s: changes.supersede(s, flight.decision, replaced, t, planned.start)
            )
        else:
            ok = self.ledger.update_model(model, lambda s: changes.begin(s, flight.decision, t, planned.start))
        if not ok:
            raise _changed_meanwhile(model)
        log.info("operator %s model=%s by %s: %s", request.action, model, who(request.trigger), t.reason)
        done = self.executor.transition(model, flight, t, now)
        if "record" not in done:  # Azure refused it, and the rollback replacing it met another writer's change
            raise _changed_meanwhile(model)
        record = self.ledger.get_decision(str(done["record"]), model)
        if record is None:  # pragma: no cover - the executor wrote it
            raise TransientError(f"decision {done['record']} is not readable yet; ask again")
        return record
