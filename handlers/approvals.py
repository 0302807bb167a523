"""Approvals of deploys (``deploy.approval`` in the policy; docs/policy.md (Approvals)).

A deploy of such a model that passed the gate is recorded ``pending`` by the executor, with the plan
it would carry out and the gate's figures, and its rollout flight stays in the model's state with
status ``pending``: the guards count it (one rollout per model), nothing is deployed. Then:

- **approve** (``POST /api/decisions/{id}/approve``, ``retrain approve``): the flight goes from
  ``pending`` to ``reserved`` in one atomic write of the model's state (the ledger's ETag or
  transaction), so of two approvals, sent twice or at once, one wins; the winner records the
  decision ``reserved`` with its approver and has the executor carry it out (the gate judged again on
  what the workspace holds now). A worker that dies after the write leaves a reserved flight, which the
  reconciler resumes as any other (the approval travels in the record).
- **reject** (``/reject``, ``retrain reject``) and **expiry** (the reconciler, past
  ``deploy.approval.expires``): the release is marked on the pending flight first (atomic: an approval
  can no longer win), then the decision is recorded ``skipped`` with who, why and when, then the slot
  is freed. A worker that dies in between leaves the mark, which the next reconciler pass finishes.

Four eyes (``four_eyes: true``, the default): the approver may not be the caller who asked. Callers
are compared as the routes record them: a signed-in principal by its object id, a command line by its
login name. A function key names nobody: an approval sent with one is never refused as the
requester's own, and a deploy asked for with one (or by an event) may be approved by any caller of
the route. docs/policy.md (Approvals) says so; four eyes mean something with App Service authentication on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from handlers import freeze, guards
from handlers.approval_rules import PENDING, RELEASE, mark, self_approval, superseded, take, who
from handlers.errors import Forbidden, NotApplicable, NotFound
from handlers.plans import Deploy, DeployPlan
from handlers.records import DecisionRecord, Flight, from_iso, iso
from handlers.signals import Trigger

if TYPE_CHECKING:
    from handlers.executor import Executor
    from handlers.policy import Policy
    from handlers.ports import Ledger

log = logging.getLogger(__name__)


def deploy_of(record: DecisionRecord) -> Deploy:
    """The deploy a pending record was written for, with the plan it rendered."""
    assert record.model is not None
    plan = DeployPlan.from_dict(record.details["rendered"])
    return Deploy(record.id, record.model, record.reason, Trigger.from_dict(record.trigger), plan)


class Approvals:
    def __init__(self, policy: Policy, ledger: Ledger, executor: Executor, clock: Callable[[], datetime]) -> None:
        self.policy = policy
        self.ledger = ledger
        self.executor = executor
        self.clock = clock

    def _record(self, decision_id: str) -> DecisionRecord:
        record = self.ledger.get_decision(decision_id)
        if record is None or record.action != "deploy" or record.model is None:
            raise NotFound(
                f"no deploy decision {decision_id!r}; GET /api/decisions?outcome=pending lists those waiting"
            )
        return record

    def approve(self, decision_id: str, trigger: Trigger, reason: str) -> DecisionRecord:
        """Carry the pending deploy out, once; its record (the one already recorded when it was
        approved before). NotApplicable when it is not pending, expired, or frozen; Forbidden when
        four eyes refuses the caller."""
        record = self._record(decision_id)
        approval = dict(record.details.get("approval") or {})
        if record.outcome != PENDING:
            if approval.get("approved_by"):
                return record  # approved already (sent twice): its record, nothing done again
            raise NotApplicable(f"decision {decision_id} is {record.outcome}, not pending; nothing to approve")
        model, now, caller = str(record.model), self.clock(), dict(trigger.caller)
        expires = from_iso(approval.get("expires"))
        if expires is not None and now >= expires:
            raise NotApplicable(
                f"decision {decision_id} expired at {approval.get('expires')}; the reconciler releases it. Deploy again "
                "to ask for a new approval"
            )
        if approval.get("four_eyes") and self_approval(record.trigger.get("caller") or {}, caller):
            raise Forbidden(
                f"{who(caller)} asked for this deploy and may not approve it too (deploy.approval.four_eyes); "
                "another operator approves it"
            )
        state = self.ledger.get_model(model)
        held = freeze.frozen(state.frozen, self.policy.freeze_windows(model), "deploy", now)
        if held is not None:
            raise NotApplicable(f"{model} is frozen by {held.reason}; approve it once the freeze is lifted")
        approved = {
            **approval,
            "approved_by": who(caller),
            "approver": caller,
            "approved_at": iso(now),
            "approve_reason": reason,
        }
        if not self.ledger.update_model(model, lambda s: take(s, decision_id, now)):
            again = self._record(decision_id)
            if again.outcome != PENDING:
                return again
            flight = self.ledger.get_model(model).flights.get(guards.ROLLOUT)
            if flight is not None and flight.data.get("supersedes") == decision_id:  # its superseder died first
                self.executor.write(superseded(record, flight.decision, now))
                raise NotApplicable(f"decision {decision_id} was superseded by decision {flight.decision}")
            raise NotApplicable(f"decision {decision_id} is being approved or released by another request; look again")
        said = f"{record.reason}; approved by {who(caller)} at {iso(now)}: {reason}"
        stored = self.executor.write(
            replace(
                record, outcome="reserved", reason=said, at=iso(now), details={**record.details, "approval": approved}
            )
        )
        if stored.outcome != "reserved":  # cannot happen while the flight is ours; the record stands
            self.executor.settle(model, guards.ROLLOUT, stored)
            return stored
        log.info("approval decision=%s model=%s approved by %s", decision_id, model, who(caller))
        return self.executor.act(replace(deploy_of(record), reason=said), now, approval=approved)

    def reject(self, decision_id: str, trigger: Trigger, reason: str) -> DecisionRecord:
        """Release the pending deploy, recorded with who rejected it and why. NotApplicable when it is
        not pending (a rejected one gives its record again)."""
        record = self._record(decision_id)
        approval = dict(record.details.get("approval") or {})
        if record.outcome != PENDING:
            if approval.get("rejected_by"):
                return record
            raise NotApplicable(f"decision {decision_id} is {record.outcome}, not pending; nothing to reject")
        caller, now = dict(trigger.caller), self.clock()
        release = {"rejected_by": who(caller), "rejecter": caller, "rejected_at": iso(now), "why": reason}
        said = f"rejected by {who(caller)} at {iso(now)}: {reason}"
        return self._release(record, release, said, now)

    def _release(self, record: DecisionRecord, release: dict[str, Any], said: str, now: datetime) -> DecisionRecord:
        model = str(record.model)
        if not self.ledger.update_model(model, lambda s: mark(s, record.id, release)):
            again = self._record(record.id)
            if again.outcome != PENDING:
                return again
            flight = self.ledger.get_model(model).flights.get(guards.ROLLOUT)
            if flight is None or flight.decision != record.id or RELEASE not in flight.data:
                raise NotApplicable(f"decision {record.id} is being approved; it no longer waits")
            release = dict(flight.data[RELEASE])  # marked by another request: finish that one
            said = str(release.get("said") or said)
        return self._finish(record, {**release, "said": said}, now)

    def _finish(self, record: DecisionRecord, release: dict[str, Any], now: datetime) -> DecisionRecord:
        approval = {**dict(record.details.get("approval") or {}), **{k: v for k, v in release.items() if k != "said"}}
        reason = f"{record.reason.split('; waits for approval')[0]}; {release.get('said')}; nothing deployed, the slot is free"
        rec = self.executor.write(
            replace(
                record, outcome="skipped", reason=reason, at=iso(now), details={**record.details, "approval": approval}
            )
        )
        self.executor.settle(str(record.model), guards.ROLLOUT, rec)
        log.info("approval decision=%s model=%s released: %s", record.id, record.model, release.get("said"))
        return rec

    def tend(self, model: str, kind: str, flight: Flight, now: datetime, report: Any) -> None:
        """The reconciler's pass over a pending flight: a release marked and not finished (its worker
        died) is finished; an expired one is released (into ``report.released``); else nothing."""
        rec = self._tend(model, flight, now)
        if rec is not None and rec.outcome == "skipped":
            report.released.append(rec)

    def _tend(self, model: str, flight: Flight, now: datetime) -> DecisionRecord | None:
        record = self.ledger.get_decision(flight.decision)
        if record is None or record.outcome != PENDING:
            if record is not None and record.outcome != "reserved":  # recorded, its settling lost
                self.executor.settle(model, guards.ROLLOUT, record)
            return record
        if RELEASE in flight.data:
            return self._finish(record, dict(flight.data[RELEASE]), now)
        expires = from_iso((record.details.get("approval") or {}).get("expires"))
        if expires is None or now < expires:
            return None
        said = f"expired at {iso(expires)} without approval (deploy.approval.expires); released by the reconciler"
        return self._release(record, {"expired_at": iso(expires), "released_by": "reconciler", "said": said}, said, now)
