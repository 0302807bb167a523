"""Ports: what the service needs from the outside, as Protocols: the ledger and the notifier here, the
Azure ML workspace's (jobs, deployments) in :mod:`handlers.workspace_ports`. Adapters live in function_app/."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from handlers.errors import PermanentError
from handlers.recorded import RecordedEvent
from handlers.records import DecisionRecord, ModelState
from handlers.signals import Trigger

T = TypeVar("T")


@dataclass(frozen=True)
class Claim:
    """The ledger's answer to "have we seen this event?".

    new: first delivery; retry: seen, but its processing never finished (crash): process again;
    busy: another instance is processing it right now (answer transient, Event Grid retries);
    done: processed before; ``decisions`` are the ids recorded for it;
    reused: the key was claimed first for another request (an Idempotency-Key sent with another route
    or body: the claim binds the key to ``trigger.request`` when it is made): ``first_used`` (when),
    ``first_for`` (the event type: the route) and ``decisions`` (if done) of the request it is bound
    to; nothing is taken over (a binding of the same request made before keys were bound to callers is no
    other request: :func:`handlers.idempotency.same_request`). As :meth:`Ledger.event_claim` reads it: ``status`` processing or done,
    and ``request``, the digest the key is bound to.
    """

    status: str
    decisions: tuple[str, ...] = ()
    first_used: str = ""
    first_for: str = ""
    request: str | None = None


@dataclass(frozen=True)
class Notification:
    """One decision as news, kept in the ledger's outbox until sent: a CloudEvent's ``id`` (stable:
    from the decision id and its outcome), ``type``, ``subject`` (the model), ``time`` and ``data``
    (the decision record). See handlers/notify.py."""

    id: str
    type: str
    subject: str
    time: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "subject": self.subject, "time": self.time, "data": self.data}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Notification:
        return cls(str(d["id"]), str(d["type"]), str(d.get("subject") or ""), str(d.get("time") or ""), d["data"])


@dataclass(frozen=True)
class OutboxEntry:
    """A notification in the outbox and how sending it went: ``attempts`` failed so far, ``due`` (not
    tried again before then: its backoff), ``error`` (why the last attempt failed: the topic's status
    and message, never the payload), ``sent`` (when it left the outbox: sent, or given up on when
    ``dead``, dead-lettered in the ledger with ``error`` as why)."""

    notification: Notification
    attempts: int = 0
    due: str = ""
    error: str = ""
    sent: str = ""
    dead: bool = False

    @property
    def id(self) -> str:
        return self.notification.id

    def to_dict(self) -> dict[str, Any]:
        """What ``retrain notifications`` shows: the notification's id, type and subject, no data."""
        n = self.notification
        return {
            "id": n.id,
            "type": n.type,
            "subject": n.subject,
            "time": n.time,
            "decision": n.data.get("id"),
            "attempts": self.attempts,
            "due": self.due,
            "error": self.error,
            "sent": self.sent,
            "dead": self.dead,
        }


class Refused(PermanentError):
    """The topic refused a batch (4xx): ``status``, and a message that holds no payload."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Notifier(Protocol):
    """Where notifications go (an Event Grid custom topic, as CloudEvents)."""

    def publish(self, notifications: Sequence[Notification]) -> None:
        """Send ``notifications`` (one batch, one attempt). Raises TransientError when the topic cannot
        take them now (outage, throttling, timeout), PermanentError (:class:`Refused` with the topic's
        status) when it refuses them."""
        ...


class Ledger(Protocol):
    def claim_event(self, trigger: Trigger, now: datetime, lease: timedelta, signal: str | None = None) -> Claim:
        """Claim ``trigger`` under its :func:`handlers.signals.claim_key`, binding the key to
        ``trigger.request`` in the same atomic write that creates the claim, which also keeps, for a
        replay, ``signal`` (:func:`handlers.recorded.encode`) and ``now`` as the event's arrival."""
        ...

    def recorded_events(self, since: datetime, limit: int) -> list[RecordedEvent]:
        """The events claimed at or after ``since``, oldest first (by arrival, then claim key), at most
        ``limit``, each with the signal kept with its claim (None for a claim made without one)."""
        ...

    def event_claim(self, trigger: Trigger) -> Claim | None:
        """The claim of ``trigger``'s key as stored (status processing or done, the request digest it
        is bound to, when and for which event type it was first made); None if never claimed (or purged)."""
        ...

    def abandon_event(self, trigger: Trigger) -> None:
        """Give up a claim (the delivery failed transiently), so that the redelivery takes it at once."""
        ...

    def event_status(self, trigger: Trigger) -> tuple[str, list[str]] | None:
        """'processing' or 'done' with the event's decision ids; None if never seen (or purged)."""
        ...

    def finish_event(
        self, trigger: Trigger, decision_ids: Sequence[str], now: datetime, records: Sequence[DecisionRecord] = ()
    ) -> list[DecisionRecord]:
        """Mark the event done with its decisions, first writing ``records`` (decisions not yet
        written, i.e. skips, which need no reservation; each as :meth:`put_decision` writes it, never
        over a final record), in one transaction where the store allows. Returns ``records`` as
        stored (a final record already under an id in place of the one given)."""
        ...

    def adopt(self, models: Iterable[str]) -> None:
        """A worker that serves calls this once as it starts, with its policy's ``models``: the ledger
        may prepare for their first writes now rather than on each model's first event (the Table
        ledger lists each in its directory: :mod:`function_app.adapters.table_models`). It changes no
        model's state, and none appears in :meth:`list_models` before its first write. Raises
        TransientError or PermanentError when the ledger cannot be reached; every write works as
        before without it (:func:`handlers.wiring.start` logs the failure and starts)."""
        ...

    def get_model(self, model: str) -> ModelState: ...

    def list_models(self) -> list[ModelState]: ...

    def update_model(self, model: str, change: Callable[[ModelState], tuple[ModelState | None, T]]) -> T:
        """Apply ``change`` atomically: re-read and re-apply on a concurrent write; write only if
        it returns a new state. Returns what ``change`` returned beside the state."""
        ...

    def reserve(
        self,
        model: str,
        change: Callable[[ModelState], tuple[ModelState | None, T]],
        record_of: Callable[[T], DecisionRecord | None],
    ) -> tuple[T, DecisionRecord | None]:
        """Apply ``change`` as :meth:`update_model` does and, when it writes a state and
        ``record_of(result)`` gives a record, write that record as :meth:`put_decision` would, in
        the same atomic write: a slot is never taken without the record of what took it. Returns
        ``change``'s result and the record stored (None when none was given). When a record stored
        under its id may not be replaced by it (:func:`handlers.records.may_replace`), nothing is
        written and that stored record is returned: the change was not made."""
        ...

    def record_and_update(
        self, model: str, record: DecisionRecord, change: Callable[[ModelState, DecisionRecord], ModelState | None]
    ) -> DecisionRecord:
        """Write ``record`` as :meth:`put_decision` does and apply ``change(state, stored)`` (``stored``:
        the record as stored, ``record`` or the final one that stood; None: no change) to ``model``'s
        state, in one atomic write (a record's outcome and the settling of its slot). Returns the
        record stored."""
        ...

    def sends_own(self, lease: timedelta) -> None:
        """This ledger's worker sends, as each delivery ends, the notifications the delivery wrote: from
        now on a notification this ledger puts in the outbox is claimed by it as it is written, for
        ``lease`` from the notification's time (:meth:`claim_own_notifications` returns it; no other
        sender takes it before that claim lapses)."""
        ...

    def put_decision(self, record: DecisionRecord) -> DecisionRecord:
        """Write ``record`` and, when it notifies (:func:`handlers.notify.notification_of`), its
        notification into the outbox, unless that notification is there already (pending or sent):
        each notification is kept once. A record already stored under its id is replaced only as
        :func:`handlers.records.may_replace` allows (a final outcome is never downgraded), decided
        atomically against concurrent writers; otherwise nothing is written. Returns the record
        stored. So does :meth:`finish_event` for the records it writes."""
        ...

    def get_decision(self, decision_id: str, model: str | None = None) -> DecisionRecord | None:
        """The record stored under ``decision_id``; ``model``, the model it concerns when the caller
        knows it (the ledger may find it faster), None when it does not (or it concerns none)."""
        ...

    def decisions(
        self,
        model: str | None = None,
        limit: int = 50,
        *,
        event_id: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
    ) -> list[DecisionRecord]:
        """The audit trail, newest first: all of it, a model's, or the decisions that answered events of
        ``event_id`` (whatever model they concern, or none); ``outcome`` and ``since`` (first written
        at or after) narrow it."""
        ...

    def model_history(self, model: str) -> list[DecisionRecord]:
        """Every decision of ``model`` but its guards' refusals (:func:`handlers.records.refused`),
        newest first: what took or settled its slot, its rollouts' transitions, its retirements, so
        what a promotion or a rollback left to retire (:mod:`handlers.rollout.retire`). No storm of
        refusals, however long, pushes one of them out."""
        ...

    def purge(self, before: datetime) -> int:
        """Delete event and decision records older than ``before``, and notifications of decisions
        made before it (sent or not: an outbox kept for the retention); returns how many records."""
        ...

    def pending_notifications(self, limit: int) -> list[Notification]:
        """Up to ``limit`` notifications of the outbox not sent (nor dead-lettered) yet, due or backing
        off (in no promised order)."""
        ...

    def claim_notifications(self, limit: int, now: datetime, lease: timedelta) -> list[OutboxEntry]:
        """Up to ``limit`` pending notifications due at ``now`` and claimed by no one (or whose claim
        lapsed), each now claimed for ``lease``: atomically, so that two senders never hold the same
        notification at a time. The claim ends with :meth:`mark_notified` or :meth:`fail_notification`
        (or when its lease lapses)."""
        ...

    def claim_own_notifications(self, limit: int, now: datetime, lease: timedelta) -> list[OutboxEntry]:
        """Up to ``limit`` of the notifications this ledger object put in the outbox (with the decisions
        it wrote) since they were last asked for, each claimed for ``lease`` as
        :meth:`claim_notifications` claims; without looking for any other: what a delivery sends as
        it ends. One that another sender claimed, or that was sent, meanwhile is left out; those over
        ``limit`` are kept for the next call. Whatever it leaves pending, a :meth:`claim_notifications`
        finds."""
        ...

    def mark_notified(self, ids: Sequence[str], now: datetime) -> None:
        """Record that the notifications ``ids`` were sent at ``now``: they are pending no more."""
        ...

    def fail_notification(
        self, note_id: str, now: datetime, attempts: int, error: str, retry_at: datetime | None
    ) -> None:
        """Record a failed attempt (``attempts`` failed so far, ``error`` why) and end its claim: tried
        again from ``retry_at``; or, when ``retry_at`` is None, dead-lettered at ``now`` (it leaves the
        outbox, kept with ``error`` as why). Nothing changes once it has been sent."""
        ...

    def notifications(self, dead: bool = False, limit: int = 50) -> list[OutboxEntry]:
        """What ``retrain notifications`` lists: the pending notifications with their attempts, or with
        ``dead`` those dead-lettered, newest first."""
        ...
