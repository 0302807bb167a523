"""Approvals of retrains and deploys (``retrain.approval``, ``deploy.approval`` in the policy;
docs/policy.md (Approvals)).

A retrain, or a deploy that passed the gate, of such a model is recorded ``pending`` by the executor,
with the plan it would carry out (the pipeline job it would submit; the deployment and the gate's
figures), and its flight stays in the model's state with status ``pending``: the guards count it (one
retrain, one rollout per model), nothing is submitted or deployed. Then:

- **approve** (``POST /api/decisions/{id}/approve``, ``retrain approve``): the flight goes from
  ``pending`` to ``reserved`` in one atomic write of the model's state (the ledger's ETag or
  transaction), so of two approvals, sent twice or at once, one wins; the winner records the
  decision ``reserved`` with its approver and has the executor carry it out (a deploy's gate judged
  again on what the workspace holds now). A worker that dies after the write leaves a reserved flight,
  which the reconciler resumes as any other (the approval travels in the record).
- **reject** (``/reject``, ``retrain reject``) and **expiry** (the reconciler, past ``approval.expires``):
  the release is marked on the pending flight first (atomic: an approval can no longer win), then the
  decision is recorded ``skipped`` with who, why and when, then the slot is freed. A worker that dies in
  between leaves the mark, which the next reconciler pass finishes.

Who may decide (:func:`handlers.approval_rules.refusal`): with ``approver_role``, a signed-in principal
holding that app role; with four eyes (``four_eyes: true``, the default), an approver the record can tell
apart from the requester (a signed-in principal by its object id, the command line by its login name) and
not the requester. A function key names nobody, so with four eyes an approval sent with one is refused
(403), never counted as a second person. A decision asked for by an event has no requester.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from handlers import freeze
from handlers.approval_rules import (
    PENDING,
    RELEASE,
    SLOT_OF,
    mark,
    refusal,
    requesters,
    superseded,
    take,
    who,
)
from handlers.creators import Creators, refuse_creators, sources
from handlers.errors import Forbidden, NotApplicable, NotFound
from handlers.holds import decision_from_record
from handlers.records import DecisionRecord, Flight, from_iso, iso

if TYPE_CHECKING:
    from handlers.executor import Executor
    from handlers.policy import Policy
    from handlers.ports import Ledger
    from handlers.signals import Trigger

log = logging.getLogger(__name__)


class Approvals:
    def __init__(
        self,
        policy: Policy,
        ledger: Ledger,
        executor: Executor,
        clock: Callable[[], datetime],
        creators: Creators | None = None,
    ) -> None:
        """``creators``: who created a run, read from the workspace (None: a backend that reads none)."""
        self.policy = policy
        self.ledger = ledger
        self.executor = executor
        self.clock = clock
        self.creators = creators

    def _record(self, decision_id: str) -> DecisionRecord:
        record = self.ledger.get_decision(decision_id)
        if record is None or record.action not in SLOT_OF or record.model is None:
            raise NotFound(
                f"no retrain or deploy decision {decision_id!r}; GET /api/decisions?outcome=pending lists those waiting"
            )
        return record

    def _refuse(self, record: DecisionRecord, caller: dict[str, Any], verb: str) -> list[dict[str, Any]]:
        """Forbidden when ``caller`` may not ``verb`` ``record``: the policy's rule as it is now, four eyes
        also when the record was asked under them; under four eyes an approver who created what the decision
        comes from (the candidate run, the upstream run, the new data asset version, and what started the retrain
        of a candidate run: :func:`handlers.creators.sources`) is refused too. Returns what the approval records of
        those checks (:func:`handlers.creators.refuse_creators`), none when there were none."""
        model, asked_under = str(record.model), dict(record.details.get("approval") or {})
        mp = self.policy.models.get(model)
        section = (mp.retrain if record.action == "retrain" else mp.deploy) if mp is not None else None
        rule = section.approval if section is not None else None
        four_eyes = bool(asked_under.get("four_eyes")) or (rule is not None and rule.four_eyes)
        role = rule.approver_role if rule is not None else asked_under.get("approver_role")
        key = f"models.{model}.{record.action}.approval"
        for what, asked in requesters(record, self.ledger.get_decision):
            why = refusal(key, four_eyes, role, asked, caller, verb, what)
            if why is not None:
                raise Forbidden(why)
        found = sources(record, self.ledger.get_decision)
        if verb != "approve" or not four_eyes or not found:
            return []
        refused = f"which this {record.action} comes from, and may not approve it too ({key}.four_eyes)"
        return refuse_creators(self.creators, found, caller, who(caller), refused)

    def approve(self, decision_id: str, trigger: Trigger, reason: str) -> DecisionRecord:
        """Carry the pending retrain or deploy out, once; its record (the one already recorded when it
        was approved before). NotApplicable when it is not pending, expired, or frozen; Forbidden when
        the caller may not approve it (four eyes, the approver role)."""
        record = self._record(decision_id)
        approval = dict(record.details.get("approval") or {})
        if record.outcome != PENDING:
            if approval.get("approved_by"):
                return record  # approved already (sent twice): its record, nothing done again
            raise NotApplicable(f"decision {decision_id} is {record.outcome}, not pending; nothing to approve")
        model, now, caller, kind = str(record.model), self.clock(), dict(trigger.caller), SLOT_OF[record.action]
        expires = from_iso(approval.get("expires"))
        if expires is not None and now >= expires:
            raise NotApplicable(
                f"decision {decision_id} expired at {approval.get('expires')}; the reconciler releases it. Ask for "
                f"the {record.action} again to ask for a new approval"
            )
        creators = self._refuse(record, caller, "approve")
        state = self.ledger.get_model(model)
        held = freeze.frozen(state.frozen, self.policy.freeze_windows(model), record.action, now)
        if held is not None:
            raise NotApplicable(f"{model} is frozen by {held.reason}; approve it once the freeze is lifted")
        approved = {
            **approval,
            "approved_by": who(caller),
            "approver": caller,
            "approved_at": iso(now),
            "approve_reason": reason,
            **({"creators": creators} if creators else {}),
        }
        if not self.ledger.update_model(model, lambda s: take(s, decision_id, now, kind)):
            again = self._record(decision_id)
            if again.outcome != PENDING:
                return again
            flight = self.ledger.get_model(model).flights.get(kind)
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
            self.executor.settle(model, kind, stored)
            return stored
        log.info("approval decision=%s model=%s approved by %s", decision_id, model, who(caller))
        decision = decision_from_record(record, model, kind)
        return self.executor.act(replace(decision, reason=said), now, approval=approved)

    def reject(self, decision_id: str, trigger: Trigger, reason: str) -> DecisionRecord:
        """Release the pending retrain or deploy, recorded with who rejected it and why. NotApplicable when it is
        not pending (a rejected one gives its record again)."""
        record = self._record(decision_id)
        approval = dict(record.details.get("approval") or {})
        if record.outcome != PENDING:
            if approval.get("rejected_by"):
                return record
            raise NotApplicable(f"decision {decision_id} is {record.outcome}, not pending; nothing to reject")
        caller, now = dict(trigger.caller), self.clock()
        self._refuse(record, caller, "reject")
        release = {"rejected_by": who(caller), "rejecter": caller, "rejected_at": iso(now), "why": reason}
        said = f"rejected by {who(caller)} at {iso(now)}: {reason}"
        return self._release(record, release, said, now)

    def _release(self, record: DecisionRecord, release: dict[str, Any], said: str, now: datetime) -> DecisionRecord:
        model, kind = str(record.model), SLOT_OF[record.action]
        marked = {**release, "said": said}  # what a reconciler finishing it says, if this worker dies
        if not self.ledger.update_model(model, lambda s: mark(s, record.id, marked, kind)):
            again = self._record(record.id)
            if again.outcome != PENDING:
                return again
            flight = self.ledger.get_model(model).flights.get(kind)
            if flight is None or flight.decision != record.id or RELEASE not in flight.data:
                raise NotApplicable(f"decision {record.id} is being approved; it no longer waits")
            release = dict(flight.data[RELEASE])  # marked by another request: finish that one
            said = str(release.get("said") or said)
        return self._finish(record, {**release, "said": said}, now)

    def _finish(self, record: DecisionRecord, release: dict[str, Any], now: datetime) -> DecisionRecord:
        approval = {**dict(record.details.get("approval") or {}), **{k: v for k, v in release.items() if k != "said"}}
        done = "nothing submitted" if record.action == "retrain" else "nothing deployed"
        reason = f"{record.reason.split('; waits for approval')[0]}; {release.get('said')}; {done}, the slot is free"
        rec = self.executor.write(
            replace(
                record, outcome="skipped", reason=reason, at=iso(now), details={**record.details, "approval": approval}
            )
        )
        self.executor.settle(str(record.model), SLOT_OF[record.action], rec)
        log.info("approval decision=%s model=%s released: %s", record.id, record.model, release.get("said"))
        return rec

    def tend(self, model: str, kind: str, flight: Flight, now: datetime, report: Any) -> None:
        """The reconciler's pass over a pending flight: a release marked and not finished (its worker
        died) is finished; an expired one is released (into ``report.released``); else nothing."""
        rec = self._tend(model, kind, flight, now)
        if rec is not None and rec.outcome == "skipped":
            report.released.append(rec)

    def _tend(self, model: str, kind: str, flight: Flight, now: datetime) -> DecisionRecord | None:
        record = self.ledger.get_decision(flight.decision, model)
        if record is None or record.outcome != PENDING:
            if record is not None and record.outcome != "reserved":  # recorded, its settling lost
                self.executor.settle(model, kind, record)
            return record
        if RELEASE in flight.data:
            return self._finish(record, dict(flight.data[RELEASE]), now)
        expires = from_iso((record.details.get("approval") or {}).get("expires"))
        if expires is None or now < expires:
            return None
        said = (
            f"expired at {iso(expires)} without approval ({record.action}.approval.expires); released by the reconciler"
        )
        return self._release(record, {"expired_at": iso(expires), "released_by": "reconciler", "said": said}, said, now)
