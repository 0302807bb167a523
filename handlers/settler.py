"""The reconciler's start of settled bursts of new data (``retrain.on.data``, :mod:`handlers.newdata`).

On each pass, a model whose burst has had no new blob for the policy's ``settle`` gets the burst's one
retrain, carried out by the executor through the same guards as any other (cooldown, single flight,
budget, freezes). The decision is keyed by the burst, so a pass that dies anywhere is repeated by the
next one (or another worker) without a second job: a record already final for it only clears the burst.
A guard's refusal leaves the burst waiting (recorded): the data is retrained on once the guards allow it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from handlers import newdata, starts
from handlers.executor import Executor
from handlers.ports import Ledger
from handlers.records import DecisionRecord, ModelState

if TYPE_CHECKING:
    from handlers.policy import Policy

log = logging.getLogger(__name__)


class Settler:
    def __init__(self, policy: Policy, ledger: Ledger, executor: Executor) -> None:
        self.policy = policy
        self.ledger = ledger
        self.executor = executor

    def start(self, state: ModelState, now: datetime) -> DecisionRecord | None:
        """The retrain of ``state``'s burst when it has settled (or its recorded refusal); None when there
        is no burst or it has not settled yet."""
        burst, model = state.burst, state.model
        rule = newdata.data_rule(self.policy, model)
        settle = rule.settle if rule is not None else timedelta(0)  # no longer named: settled, and skipped
        if burst is None or not newdata.settled(burst, settle, now, rule.max_wait if rule is not None else None):
            return None
        decision = newdata.burst_retrain(model, self.policy, burst, settle, now)
        record, status = starts.start(self.executor, self.ledger, decision, now)
        if status == "reserved":  # a worker holds it (its lease, then the repair): the burst stays till it ends
            return None
        if status == "waits":  # the burst waits for the guards
            log.info("new data of model=%s waits for the guards: %s", model, record.reason)
            return record
        self.ledger.update_model(model, lambda s: newdata.cleared(s, burst))
        log.info("burst %s of model=%s: %s (%s)", burst.get("id"), model, record.outcome, record.id)
        return record
