"""Telling people: every decision that changes something or fails becomes a notification, kept in
the ledger's outbox with the decision and sent to the Notifier (an Event Grid custom topic) later.

Which records notify (:func:`notification_of`, pure): a ``submitted`` or ``failed`` decision of any
action (a retrain, a deploy, a rollout step, a promotion, a rollback, a retirement, an operator's
pause or resume), a held rollout (``rollout`` recorded ``skipped``), and every other recorded
outcome of ``promote``, ``rollback`` and ``retire``. Never a ``reserved`` record (it is written again
with its outcome), a dry run or a ``planned`` one (nothing changed), nor another skip.

The notification id is stable: derived from the decision id and its outcome, so a decision written
again with the same outcome (a redelivery, a resumed transition) is the same notification, and one
rewritten ``reserved`` -> ``submitted`` notifies once, for ``submitted``. The ledger writes the
outbox row with the decision (``put_decision``, ``finish_event``) and keeps it until it is sent;
:class:`Outbox` sends what is pending: after each delivery one attempt (a failure leaves the rows
for the reconciler), and on each reconciler pass a bounded number of batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from handlers.errors import PermanentError, TransientError
from handlers.keys import digest
from handlers.ports import Ledger, Notification, Notifier
from handlers.records import DecisionRecord

log = logging.getLogger(__name__)

TYPE_PREFIX = "retrain.decision"
# Actions whose every recorded outcome is news (besides any submitted or failed decision).
ALWAYS = frozenset({"promote", "rollback", "retire"})
NEVER = frozenset({"reserved", "planned"})


def notification_id(decision_id: str, outcome: str) -> str:
    """The stable CloudEvent id of ``decision_id``'s notification for ``outcome``."""
    return f"n-{digest('notify', decision_id, outcome, length=32)}"


def notifies(record: DecisionRecord) -> bool:
    if record.outcome in NEVER or record.details.get("dry_run"):
        return False
    if record.outcome in ("submitted", "failed") or record.action in ALWAYS:
        return True
    return record.action == "rollout" and record.outcome == "skipped"  # a held rollout


def notification_of(record: DecisionRecord) -> Notification | None:
    """The notification ``record`` gives (None when it gives none): a CloudEvent's id, type
    (``retrain.decision.<action>.<outcome>``), subject (the model) and data (the record)."""
    if not notifies(record):
        return None
    return Notification(
        id=notification_id(record.id, record.outcome),
        type=f"{TYPE_PREFIX}.{record.action}.{record.outcome}",
        subject=record.model or "",
        time=record.at,
        data=record.to_dict(),
    )


@dataclass
class DrainReport:
    """What one drain did: the ids sent, whether rows are still pending, and the error that stopped it."""

    sent: list[str] = field(default_factory=list)
    attempts: int = 0
    more: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"sent": list(self.sent), "attempts": self.attempts, "more": self.more, "error": self.error}


class Outbox:
    """Sends the ledger's pending notifications to ``notifier``, ``batch`` at a time. Never raises:
    what cannot be sent now stays pending, for the next drain."""

    def __init__(self, ledger: Ledger, notifier: Notifier | None, batch: int = 50) -> None:
        self.ledger = ledger
        self.notifier = notifier
        self.batch = batch

    @property
    def enabled(self) -> bool:
        return self.notifier is not None

    def drain(self, now: datetime, attempts: int = 1) -> DrainReport:
        """At most ``attempts`` batches (each one publish): after a delivery 1, so a decision is never
        slowed by more than one attempt; a reconciler pass a few more."""
        report = DrainReport()
        if self.notifier is None:
            return report
        for _ in range(attempts):
            try:
                pending = self.ledger.pending_notifications(self.batch)
                if not pending:
                    report.more = False
                    return report
                report.attempts += 1
                self.notifier.publish(pending)
                self.ledger.mark_notified([n.id for n in pending], now)
            except TransientError as exc:
                report.error, report.more = str(exc), True
                log.warning("notifications left pending for the next try: %s", exc)
                return report
            except PermanentError as exc:  # the topic refused the batch: it stays pending, and says why
                report.error, report.more = str(exc), True
                log.warning("the notification topic refused a batch; left pending: %s", exc)
                return report
            report.sent.extend(n.id for n in pending)
            report.more = len(pending) >= self.batch
            log.info("notified %d decision(s): %s", len(pending), ", ".join(n.id for n in pending))
            if not report.more:
                return report
        return report
