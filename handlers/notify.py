"""Telling people: every decision that changes something or fails becomes a notification, kept in
the ledger's outbox with the decision and sent to the Notifier (an Event Grid custom topic) later.

Which records notify (:func:`notification_of`, pure): a ``submitted`` or ``failed`` decision of any
action (a retrain, a deploy, a rollout step, a promotion, a rollback, a retirement, an operator's
pause or resume), a held rollout (``rollout`` recorded ``skipped``), a retrain or deploy waiting for
approval (``pending``) and how it ended without one (rejected, expired, superseded), and every other recorded
outcome of ``promote``, ``rollback`` and ``retire``. Never a ``reserved`` record (it is written again
with its outcome), a dry run or a ``planned`` one (nothing changed), nor another skip.

The notification id is stable: derived from the decision id and its outcome, so a decision written
again with the same outcome (a redelivery, a resumed transition) is the same notification, and one
rewritten ``reserved`` -> ``submitted`` notifies once, for ``submitted``. The ledger writes the
outbox row with the decision (``put_decision``, ``finish_event``) and keeps it until it is sent;
:class:`Outbox` sends what is pending: after each delivery one attempt at what that delivery put in
the outbox (a failure leaves the rows for the reconciler), and on each reconciler pass a bounded
number of batches of whatever is due.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from handlers.errors import PermanentError, TransientError
from handlers.keys import digest
from handlers.ports import Ledger, Notification, Notifier, OutboxEntry
from handlers.records import DecisionRecord, from_iso

log = logging.getLogger(__name__)

TYPE_PREFIX = "retrain.decision"
# Actions whose every recorded outcome is news (besides any submitted or failed decision).
ALWAYS = frozenset({"promote", "rollback", "retire"})
NEVER = frozenset({"reserved", "planned"})


def notification_id(decision_id: str, outcome: str) -> str:
    """The stable CloudEvent id of ``decision_id``'s notification for ``outcome``."""
    return f"n-{digest('notify', decision_id, outcome, length=32)}"


# How a decision that waited for approval ended without it: the key its details.approval then holds.
APPROVAL_ENDS = (("rejected_by", "rejected"), ("expired_at", "expired"), ("superseded_by", "superseded"))


def approval_ended(record: DecisionRecord) -> str | None:
    """``rejected``, ``expired`` or ``superseded`` when ``record`` is a retrain or deploy that waited for
    approval and was released so (:mod:`handlers.approvals`); else None."""
    approval = record.details.get("approval")
    if record.outcome != "skipped" or not isinstance(approval, dict):
        return None
    return next((end for key, end in APPROVAL_ENDS if approval.get(key)), None)


def notifies(record: DecisionRecord) -> bool:
    if record.outcome in NEVER or record.details.get("dry_run"):
        return False
    if record.outcome in ("submitted", "failed", "pending") or record.action in ALWAYS:  # pending: asks a person
        return True
    if approval_ended(record) is not None:  # the person asked, or the card that asked them, learns how it ended
        return True
    if record.details.get("incident"):  # a veto: a data-quality breach someone must look into
        return True
    return record.action == "rollout" and record.outcome == "skipped"  # a held rollout


def notification_of(record: DecisionRecord) -> Notification | None:
    """The notification ``record`` gives (None when it gives none): a CloudEvent's id, type
    (``retrain.decision.<action>.<outcome>``; ``rejected``, ``expired`` or ``superseded`` for the outcome
    of one that waited for approval), subject (the model) and data (the record)."""
    if not notifies(record):
        return None
    outcome = approval_ended(record) or ("vetoed" if record.details.get("incident") else record.outcome)
    return Notification(
        id=notification_id(record.id, outcome),
        type=f"{TYPE_PREFIX}.{record.action}.{outcome}",
        subject=record.model or "",
        time=record.at,
        data=record.to_dict(),
    )


LEASE = timedelta(seconds=60)  # a sender's claim on a notification; a publish takes at most 5 s
MAX_ATTEMPTS = 10  # RETRAIN_NOTIFY_MAX_ATTEMPTS: refusals before a notification is dead-lettered
MAX_AGE = timedelta(hours=24)  # RETRAIN_NOTIFY_MAX_AGE_HOURS: after this, a failure dead-letters it
FIRST_RETRY, LAST_RETRY = 30.0, 3600.0  # seconds: the backoff doubles from one to the other
# Event Grid takes at most 1 MB per post (the array of events), and refuses more with 413 (Event Grid
# docs, "Event schema": the array can have a total size of up to 1 MB). A post is kept under it,
# counting each event's JSON and the envelope the client adds; one notification too big alone is
# dead-lettered without a post.
MAX_POST_BYTES = 1_000_000
_ENVELOPE_BYTES = 1_000  # per event: source, specversion, datacontenttype, separators, with room
REFUSED = "refused: "  # the prefix of the error of an attempt the topic refused (4xx)


def backoff(attempts: int, rng: random.Random | None = None) -> timedelta:
    """The wait after the ``attempts``-th failed attempt: 30 s, doubling, at most an hour, plus up to
    a fifth more (jitter, so that notifications refused together are not retried together)."""
    base = min(LAST_RETRY, FIRST_RETRY * 2 ** min(max(attempts, 1) - 1, 20))
    return timedelta(seconds=base * (1 + (rng or random).random() / 5))


def size_of(note: Notification) -> int:
    """About how many bytes ``note`` adds to a post."""
    return len(json.dumps(note.to_dict(), default=str).encode()) + _ENVELOPE_BYTES


@dataclass
class DrainReport:
    """What one drain did: the ids sent, retried later (``deferred``) and dead-lettered (``dead``), the
    posts made (``attempts``), whether rows are still pending, and the error that stopped it."""

    sent: list[str] = field(default_factory=list)
    attempts: int = 0
    more: bool = False
    error: str | None = None
    deferred: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": list(self.sent),
            "attempts": self.attempts,
            "more": self.more,
            "error": self.error,
            "deferred": list(self.deferred),
            "dead": list(self.dead),
        }


class Outbox:
    """Sends the ledger's pending notifications to ``notifier``, ``batch`` at a time. Never raises:
    what cannot be sent now stays pending, for a later drain.

    A drain claims what is due (the ledger leases each row to one sender at a time, so concurrent
    drains never post the same notification together), posts it in batches under Event Grid's 1 MB,
    and records each outcome: sent; or a failed attempt, tried again after :func:`backoff`; or, once
    the topic has refused it ``max_attempts`` times or it is older than ``max_age`` (whatever failed),
    dead-lettered in the ledger with why. A batch refused as a whole (4xx) may be refused for one bad
    notification: each of its notifications is posted alone on its next try, so the others go."""

    def __init__(
        self,
        ledger: Ledger,
        notifier: Notifier | None,
        batch: int = 50,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        max_age: timedelta = MAX_AGE,
        lease: timedelta = LEASE,
        rng: random.Random | None = None,
    ) -> None:
        self.ledger = ledger
        self.notifier = notifier
        self.batch = batch
        if notifier is not None:  # what a delivery writes, it sends as it ends: claimed as written
            ledger.sends_own(lease)
        self.max_attempts = max_attempts
        self.max_age = max_age
        self.lease = lease
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security

    @property
    def enabled(self) -> bool:
        return self.notifier is not None

    def drain(self, now: datetime, attempts: int = 1, *, own: bool = False) -> DrainReport:
        """At most ``attempts`` posts: after a delivery 1, so a decision is never slowed by more than
        one attempt; a reconciler pass a few more. ``own``: only what this worker's ledger put in the
        outbox since (:meth:`Ledger.claim_own_notifications`: no query for the rest), what a
        delivery sends as it ends; the rest is the reconciler's."""
        report = DrainReport()
        if self.notifier is None:
            return report
        try:
            while report.attempts < attempts:
                # what this worker wrote first (claimed as written, when it sends what it writes), then,
                # unless only those, whatever else is due
                claimed = self.ledger.claim_own_notifications(self.batch, now, self.lease)
                if not own and len(claimed) < self.batch:
                    claimed += self.ledger.claim_notifications(self.batch - len(claimed), now, self.lease)
                if not claimed:
                    report.more = False
                    return report
                posts = self._posts(claimed, now, report)
                for post in posts:
                    # What was claimed but is not posted in this drain waits for its lease to lapse.
                    if report.attempts >= attempts:
                        report.more = True
                        return report
                    if not self._send(post, now, report):
                        report.more = True
                        return report
                report.more = len(claimed) >= self.batch
                if not report.more:
                    return report
        except (TransientError, PermanentError) as exc:  # the ledger: what was claimed waits out its lease
            report.error, report.more = str(exc), True
            log.warning("notifications left pending: the ledger failed: %s", exc)
        return report

    def _posts(self, claimed: list[OutboxEntry], now: datetime, report: DrainReport) -> list[list[OutboxEntry]]:
        """``claimed`` as posts: those the topic refused last time alone, the others together up to
        MAX_POST_BYTES each; one too big alone is dead-lettered here."""
        batches: list[list[OutboxEntry]] = []  # in the order claimed, each under MAX_POST_BYTES
        alone: list[list[OutboxEntry]] = []
        size = 0
        for entry in claimed:
            bytes_ = size_of(entry.notification)
            if bytes_ > MAX_POST_BYTES:
                why = f"{REFUSED}{bytes_} bytes, over the topic's {MAX_POST_BYTES} per post; not sent"
                self.ledger.fail_notification(entry.id, now, entry.attempts, why, None)
                report.dead.append(entry.id)
                log.warning("notification %s dead-lettered: %s", entry.id, why)
            elif entry.error.startswith(REFUSED):
                alone.append([entry])
            else:
                if not batches or size + bytes_ > MAX_POST_BYTES:
                    batches.append([])
                    size = 0
                batches[-1].append(entry)
                size += bytes_
        return batches + alone

    def _send(self, post: list[OutboxEntry], now: datetime, report: DrainReport) -> bool:
        """Post ``post`` and record how it went; False when the topic is unavailable (stop for now)."""
        assert self.notifier is not None
        ids = [e.id for e in post]
        report.attempts += 1
        try:
            self.notifier.publish([e.notification for e in post])
        except TransientError as exc:  # the topic is unavailable: back off; say so once for the post
            report.error = str(exc)
            self._failed(post, now, str(exc), report, refused=False, wait=exc.retry_after)
            log.warning("%d notification(s) left pending for a later try: %s", len(post), exc)
            return False
        except PermanentError as exc:  # refused: back off, dead-letter after max_attempts
            report.error = str(exc)
            self._failed(post, now, f"{REFUSED}{exc}", report, refused=True)
            log.warning("the notification topic refused %d notification(s): %s", len(post), exc)
            return True
        self.ledger.mark_notified(ids, now)
        report.sent.extend(ids)
        log.info("notified %d decision(s): %s", len(ids), ", ".join(ids))
        return True

    def _failed(
        self,
        post: list[OutboxEntry],
        now: datetime,
        why: str,
        report: DrainReport,
        *,
        refused: bool,
        wait: float | None = None,
    ) -> None:
        dead = []
        for entry in post:
            attempts = entry.attempts + 1
            made = from_iso(entry.notification.time)
            too_old = made is not None and now - made >= self.max_age
            if too_old or (refused and attempts >= self.max_attempts):
                self.ledger.fail_notification(entry.id, now, attempts, why, None)
                dead.append(entry.id)
                continue
            delay = backoff(attempts, self.rng)
            if wait is not None:
                delay = max(delay, timedelta(seconds=wait))
            self.ledger.fail_notification(entry.id, now, attempts, why, now + delay)
            report.deferred.append(entry.id)
        if dead:
            report.dead.extend(dead)
            log.warning(
                "%d notification(s) dead-lettered in the ledger (retrain notifications --dead): %s", len(dead), why
            )
