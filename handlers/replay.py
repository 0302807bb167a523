"""Replaying dead-lettered events (guarantee 5: nothing lost).

Event Grid dead-letters an event it could not deliver into a blob container, as blobs named
``SUBSCRIPTION-NAME/YYYY/M/D/H/<guid>.json`` that each hold a JSON array of the events, with
``deadLetterReason``, ``deliveryAttempts``, ``lastDeliveryOutcome`` and times added beside the
event's own fields. Replaying runs each event through the service as a delivery would: the
ledger makes that safe (a replayed event that was processed after all is a duplicate).
A blob is marked as replayed only when every event in it was handled, so a transient failure
leaves it to be replayed again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from handlers import jsonin
from handlers.envelopes import Envelope, envelope_from_dict
from handlers.errors import InvalidInput, PermanentError, RetrainError, TransientError

if TYPE_CHECKING:
    from handlers.service import RetrainService

log = logging.getLogger(__name__)

DEAD_LETTER_FIELDS = (
    "deadLetterReason",
    "deliveryAttempts",
    "lastDeliveryOutcome",
    "publishTime",
    "lastDeliveryAttemptTime",
)


class DeadLetterStore(Protocol):
    def pending(self) -> Iterable[str]:
        """Names of dead-letter blobs not yet replayed."""
        ...

    def read(self, name: str) -> bytes: ...

    def mark_replayed(self, name: str, summary: str) -> None: ...


@dataclass(frozen=True)
class DeadLettered:
    blob: str
    envelope: Envelope | None
    reason: str
    attempts: int | None
    last_outcome: str | None
    error: str | None = None


@dataclass(frozen=True)
class ReplayReport:
    blob: str
    event_id: str | None
    event_type: str | None
    dead_letter_reason: str
    outcome: str  # replayed, duplicate, would replay, unreadable, failed, transient
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_dead_letters(blob: str, content: bytes) -> list[DeadLettered]:
    """The events of one dead-letter blob; an unreadable one is reported, never dropped."""
    try:
        raw = jsonin.loads(content, "dead-lettered events")
    except InvalidInput as exc:
        return [DeadLettered(blob, None, "unknown", None, None, f"blob is not readable: {exc}")]
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for item in items:
        if not isinstance(item, dict):
            out.append(DeadLettered(blob, None, "unknown", None, None, "an entry is not a JSON object"))
            continue
        event = {k: v for k, v in item.items() if k not in DEAD_LETTER_FIELDS}
        reason = str(item.get("deadLetterReason") or "unknown")
        attempts = item.get("deliveryAttempts")
        try:
            env = envelope_from_dict(event)
        except RetrainError as exc:
            out.append(DeadLettered(blob, None, reason, None, None, str(exc)))
            continue
        out.append(
            DeadLettered(
                blob,
                env,
                reason,
                int(attempts) if isinstance(attempts, (int, float)) else None,
                str(item.get("lastDeliveryOutcome") or "") or None,
            )
        )
    return out


def replay(service: RetrainService, store: DeadLetterStore, dry_run: bool = False) -> list[ReplayReport]:
    """Each pending blob's events through the service. A blob or an entry that cannot be read (too large,
    not JSON, not an event) is reported ``unreadable`` and does not stop the others; the blob is marked
    with why, so the next replay does not trip on it again (it stays in the container for a person)."""
    reports: list[ReplayReport] = []
    for name in store.pending():
        try:
            content = store.read(name)
        except InvalidInput as exc:  # too large to be a dead letter: not downloaded
            reports.append(ReplayReport(name, None, None, "unknown", "unreadable", str(exc)))
            if not dry_run:
                store.mark_replayed(name, _summary(f"unreadable: {exc}"))
            continue
        except TransientError as exc:
            reports.append(ReplayReport(name, None, None, "unknown", "transient", f"{exc}; replay again later"))
            continue
        except PermanentError as exc:  # gone since it was listed, or not ours to read: the others go on
            reports.append(ReplayReport(name, None, None, "unknown", "failed", str(exc)))
            continue
        complete, unreadable = True, []
        for item in parse_dead_letters(name, content):
            env = item.envelope
            if env is None:
                detail = item.error or "unreadable"
                reports.append(ReplayReport(name, None, None, item.reason, "unreadable", detail))
                unreadable.append(detail)
                continue
            base = (name, env.event_id, env.event_type, item.reason)
            if dry_run:
                reports.append(
                    ReplayReport(
                        *base,
                        "would replay",
                        f"dead-lettered after {item.attempts} attempt(s), last outcome {item.last_outcome}",
                    )
                )
                continue
            try:
                result = service.handle_envelope(env)
            except TransientError as exc:
                reports.append(ReplayReport(*base, "transient", f"{exc}; replay again later"))
                complete = False
                continue
            except PermanentError as exc:
                reports.append(ReplayReport(*base, "failed", str(exc)))
                continue
            status = "duplicate" if result.status == "duplicate" else "replayed"
            outcomes = ", ".join(f"{d.model or '-'}: {d.action} {d.outcome}" for d in result.decisions) or "no decision"
            reports.append(ReplayReport(*base, status, outcomes))
        if complete and not dry_run:
            summary = f"replayed; {len(unreadable)} unreadable: {unreadable[0]}" if unreadable else "replayed"
            store.mark_replayed(name, _summary(summary))
            log.info("dead-letter blob %s replayed", name)
    return reports


def _summary(text: str) -> str:
    """What a blob's metadata can carry: printable ASCII (a header value), at most 256 characters."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:256]
