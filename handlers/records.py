"""What the ledger stores: decision records and per-model state. Plain data, JSON-friendly."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

OUTCOMES = ("reserved", "pending", "submitted", "planned", "skipped", "failed")

# Bounds that keep every record inside what every ledger stores (an Azure Table entity holds at most
# 1 MiB, a string property 64 KiB): a longer text is cut, keeping its start, its length and a digest.
MAX_TEXT = 2_000  # characters of one string value in a record (ids, reasons, tag values, ...)
MAX_DETAILS = 200_000  # characters of a record's details as JSON, after every text is cut


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def span(delta: timedelta) -> str:
    """A duration as the policy file writes it: ``6h``, ``30m``, ``1d``, ``45s`` (the largest whole unit)."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def from_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def cut(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` itself when it fits in ``limit`` characters, else its start and what was cut: its length
    and a SHA-256 digest, so two long values can still be told apart and matched to their source."""
    if len(text) <= limit:
        return text
    mark = (
        f"... [cut: {len(text)} characters, sha256 {hashlib.sha256(text.encode('utf-8', 'replace')).hexdigest()[:16]}]"
    )
    return text[: max(0, limit - len(mark))] + mark


def _leaf(value: Any, limit: int) -> Any:
    """A scalar as a record keeps it: texts cut, and numbers JSON can carry (NaN and infinities are
    kept as their text, so that every reply stays strict JSON)."""
    if isinstance(value, str):
        return cut(value, limit)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _bounded(value: Any, limit: int) -> Any:
    """Every string in ``value`` (keys included) cut to ``limit``; iterative, so depth costs no stack."""
    if not isinstance(value, dict | list | tuple):
        return _leaf(value, limit)
    root: Any = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        source, target = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in items:
            if isinstance(item, dict | list | tuple):
                child: Any = {} if isinstance(item, dict) else []
                stack.append((item, child))
            else:
                child = _leaf(item, limit)
            if isinstance(target, dict):
                target[cut(str(key), limit)] = child
            else:
                target.append(child)
    return root


@dataclass
class DecisionRecord:
    """One decision and its outcome: the unit of the audit trail and of every reply."""

    id: str
    model: str | None
    action: str  # retrain, deploy, promote, rollback, none
    outcome: str  # one of OUTCOMES
    reason: str
    trigger: dict[str, Any]
    at: str
    job: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "action": self.action,
            "outcome": self.outcome,
            "reason": self.reason,
            "trigger": dict(self.trigger),
            "at": self.at,
            "job": self.job,
            "details": self.details,
        }

    def bounded(self) -> DecisionRecord:
        """This record within :data:`MAX_TEXT` per text and :data:`MAX_DETAILS` of details: what every
        ledger can store. Details still too large after cutting are replaced by a note saying so."""
        details = _bounded(self.details, MAX_TEXT)
        size = len(json.dumps(details, default=str))
        if size > MAX_DETAILS:
            details = {"cut": f"details of {size} characters were too large to keep; see the logs of this decision"}
        return replace(
            self,
            id=cut(self.id),
            model=None if self.model is None else cut(self.model),
            reason=cut(self.reason, 4 * MAX_TEXT),
            trigger=_bounded(self.trigger, MAX_TEXT),
            job=_bounded(self.job, MAX_TEXT) if self.job is not None else None,
            details=details,
        )

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "outcome": self.outcome, "reason": self.reason, "at": self.at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecisionRecord:
        return cls(
            id=data["id"],
            model=data.get("model"),
            action=data["action"],
            outcome=data["outcome"],
            reason=data["reason"],
            trigger=dict(data.get("trigger") or {}),
            at=data["at"],
            job=data.get("job"),
            details=dict(data.get("details") or {}),
        )


def refused(record: DecisionRecord) -> bool:
    """Whether ``record`` is a guard's refusal (``skipped``, with the ``guard`` that refused it):
    what a storm of events writes, and what takes, settles or retires nothing."""
    return record.outcome == "skipped" and bool(record.details.get("guard"))


def holds(record: DecisionRecord | None, now: datetime) -> bool:
    """Whether ``record`` is the reservation a worker made, or took over, at ``now``: one it may act on. Another
    worker's reservation stands when the worker's own write did not land (a newer one was there)."""
    return record is not None and record.outcome == "reserved" and record.at == iso(now)


def may_replace(stored: DecisionRecord, new: DecisionRecord) -> bool:
    """Whether ``new`` may be written over ``stored``, the record under the same id: a recorded final
    outcome is never downgraded. ``reserved`` gives way to what was decided at or after it (what came of
    the reservation, dated as the reservation by the worker that made it, or the reservation resumed),
    never to anything decided before it: a worker that stalled past its lease (before its guards'
    refusal landed, or in its act, before its outcome did) wakes while the worker that took the decision
    over since, which dates the reservation anew (:meth:`handlers.executor.Executor.taken_over`),
    carries it out; its stale outcome written over that reservation would leave a job running with its
    record saying otherwise and its model's slot freed. A guard's refusal (``skipped`` with its ``guard``) only to a new
    reservation, the executor carrying the decision out after all (a run's deploy decision judged
    again from another event about the run), or to a later guard's refusal; ``failed`` only to an action tried again that went
    through (``submitted``, ``planned``: a retirement retried by the next reconciler pass); ``pending``
    (a deploy waiting for approval) only to its approval (``reserved``) or its release (``skipped``). Nothing
    else replaces a final record, so a redelivery, a retried request or a second writer finds the
    record as it was first decided."""
    if stored.outcome == "reserved":
        return new.at >= stored.at
    if stored.outcome == "pending":  # waiting for a person: approved (reserved again), rejected or expired
        return new.outcome in ("reserved", "skipped")
    if refused(stored):  # judged again: carried out, or refused anew
        return new.outcome == "reserved" or (refused(new) and new.at >= stored.at)
    if stored.outcome == "failed":
        return new.outcome in ("submitted", "planned")
    return False


@dataclass(frozen=True)
class Flight:
    """Work in flight for a model: a retrain job or a rollout. One per kind (single-flight)."""

    decision: str
    since: str
    status: str = (
        "reserved"  # reserved (before the action), pending (waiting for approval), submitted (acting in Azure)
    )
    job: str | None = None
    previous_retrain_at: str | None = None  # restored if the reserved action fails for good
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelState:
    """Per-model guard state. ``etag`` is the ledger's concurrency token (opaque to the inside).
    ``kept``: the traffic the last promotion replaced (``endpoint``, ``traffic``, ``replaced_by``,
    ``decision``, ``at``), which an operator's rollback restores when no rollout is in flight.
    ``retire_due``: when the reconciler next reads the model's decisions for deployments to retire
    (:mod:`handlers.rollout.retire`): None not known yet (a state written before it was kept: read on the
    next pass), ``""`` nothing waits until a rollout ends, else a time (``iso``, or ``iso#id``: set by
    the end of rollout ``id``), from which on each pass reads them."""

    model: str
    last_retrain_at: str | None = None
    budget_day: str | None = None
    budget_used: int = 0
    flights: dict[str, Flight] = field(default_factory=dict)
    etag: str | None = None
    kept: dict[str, Any] | None = None
    retire_due: str | None = None
    frozen: dict[str, Any] | None = None  # the stop switch (handlers.freeze): by, why, at, actions
    burst: dict[str, Any] | None = None  # new blobs not yet retrained on (handlers.newdata): id, first, last, blobs
    # data assets watched for new versions (handlers.watcher): asset -> the newest version seen, and its creation
    assets: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "last_retrain_at": self.last_retrain_at,
            "budget_day": self.budget_day,
            "budget_used": self.budget_used,
            "flights": {k: asdict(f) for k, f in self.flights.items()},
        }
        if self.kept is not None:
            out["kept"] = dict(self.kept)
        if self.retire_due is not None:
            out["retire_due"] = self.retire_due
        if self.frozen is not None:
            out["frozen"] = dict(self.frozen)
        if self.burst is not None:
            out["burst"] = dict(self.burst)
        if self.assets is not None:
            out["assets"] = dict(self.assets)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], etag: str | None = None) -> ModelState:
        return cls(
            model=data["model"],
            last_retrain_at=data.get("last_retrain_at"),
            budget_day=data.get("budget_day"),
            budget_used=int(data.get("budget_used") or 0),
            flights={k: Flight(**v) for k, v in (data.get("flights") or {}).items()},
            etag=etag,
            kept=dict(data["kept"]) if isinstance(data.get("kept"), dict) else None,
            retire_due=data["retire_due"] if isinstance(data.get("retire_due"), str) else None,
            frozen=dict(data["frozen"]) if isinstance(data.get("frozen"), dict) else None,
            burst=dict(data["burst"]) if isinstance(data.get("burst"), dict) else None,
            assets=dict(data["assets"]) if isinstance(data.get("assets"), dict) else None,
        )
