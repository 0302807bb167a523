"""What ``retrain backtest`` reports (:mod:`handlers.backtest` replays): per model, what the draft
policy would have done beside what was recorded, the events where the two differ, and the estimated
compute. Plain values; :meth:`Report.to_dict` is the ``--json`` shape.

Each decision, on either side, is one :class:`Outcome`: its ``action`` (``retrain``, ``deploy`` or
``none`` for a skip) and its ``result``: ``started`` (the guards let it act), ``refused`` (a guard
said no: ``guard`` names it, ``cooldown``, ``budget``, ``in_flight``, ``frozen``), ``skipped`` (the
policy's rules decided nothing, or a dry run) or ``failed`` (recorded side only).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from handlers.records import DecisionRecord

STARTED = frozenset({"submitted", "planned", "pending", "reserved"})  # what came of a decision that acted
NO_MODEL = "(no model)"  # events no model of either policy is concerned with


@dataclass(frozen=True)
class Outcome:
    """One decision of one side, as the report counts it (see the module's docstring)."""

    action: str
    result: str
    guard: str | None = None
    reason: str = ""
    component: str | None = None  # a started retrain's pipeline component (for the compute estimate)

    @property
    def label(self) -> str:
        """``retrain started``, ``retrain refused (cooldown)``, ``skipped``: what a difference line shows."""
        head = "skipped" if self.action == "none" and self.result == "skipped" else f"{self.action} {self.result}"
        if self.action == "none" and self.result == "failed":
            head = "failed"
        return f"{head} ({self.guard})" if self.guard else head

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "result": self.result, "guard": self.guard, "reason": self.reason}


def recorded_outcome(record: DecisionRecord) -> Outcome:
    """What the recorded decision ``record`` did, counted as the draft's decisions are."""
    guard = record.details.get("guard")
    rendered = record.details.get("rendered")
    component = rendered.get("component") if isinstance(rendered, dict) else None
    if record.details.get("dry_run"):
        return Outcome(record.action, "skipped", None, f"dry run: {record.reason}")
    if record.action == "collect":  # a blob counted into a burst: a skip (its retrain is the reconciler's)
        return Outcome("none", "skipped", None, record.reason)
    if record.outcome == "skipped" and guard:
        return Outcome(record.action, "refused", str(guard), record.reason)
    if record.outcome in STARTED and record.action in ("retrain", "deploy"):
        return Outcome(record.action, "started", None, record.reason, component)
    result = "failed" if record.outcome == "failed" else "skipped"
    return Outcome(record.action, result, None, record.reason)


@dataclass(frozen=True)
class Difference:
    """An event on which the draft and the record differ for a model: each side's outcomes."""

    at: str
    event_id: str
    event_type: str
    recorded: tuple[Outcome, ...]
    draft: tuple[Outcome, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "recorded": [o.to_dict() for o in self.recorded],
            "draft": [o.to_dict() for o in self.draft],
        }


@dataclass(frozen=True)
class Compute:
    """A side's retraining runs and their estimated compute: ``runs`` x the recorded mean duration of
    each run's pipeline; ``unknown``: the pipelines of which no run was recorded (no estimate)."""

    runs: int
    estimate: timedelta | None
    unknown: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "seconds": None if self.estimate is None else int(self.estimate.total_seconds()),
            "unknown_pipelines": list(self.unknown),
        }


def compute(outcomes: list[Outcome], durations: dict[str, timedelta]) -> Compute:
    runs = [o for o in outcomes if o.action == "retrain" and o.result == "started"]
    unknown = sorted({str(o.component) for o in runs if o.component not in durations})
    if unknown:
        return Compute(len(runs), None, tuple(unknown))
    return Compute(len(runs), sum((durations[str(o.component)] for o in runs), timedelta()))


@dataclass
class ModelReport:
    """One model: each side's counts (``action result`` -> how many; a refusal also as
    ``action refused guard``), compute, and the events where the two sides differ."""

    model: str
    recorded: list[Outcome] = field(default_factory=list)
    draft: list[Outcome] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    recorded_compute: Compute | None = None
    draft_compute: Compute | None = None

    @staticmethod
    def counts(outcomes: list[Outcome]) -> dict[str, int]:
        out: Counter[str] = Counter()
        for o in outcomes:
            out["skipped" if o.action == "none" and o.result == "skipped" else f"{o.action} {o.result}"] += 1
            if o.guard:
                out[f"{o.action} refused {o.guard}"] += 1
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "recorded": self.counts(self.recorded),
            "draft": self.counts(self.draft),
            "compute": {
                "recorded": self.recorded_compute.to_dict() if self.recorded_compute else None,
                "draft": self.draft_compute.to_dict() if self.draft_compute else None,
            },
            "differences": [d.to_dict() for d in self.differences],
        }


@dataclass
class Report:
    """The whole backtest: the window (``since`` .. ``until``), how many events were replayed, those
    that could not be (``unreplayable``: kept no signal) and the operators' requests (no policy
    decides them), the reconciler's recorded retrains replayed, the draft's retrains whose checks had
    nothing recorded to be judged on (``unchecked``: counted as started), the durations the estimate used (pipeline -> mean of its recorded runs), each
    model, and ``notes``: what the replay assumed."""

    policy: str
    since: str
    until: str
    replayed: int = 0
    unreplayable: list[str] = field(default_factory=list)
    operator: int = 0
    reconciler: int = 0  # the reconciler's recorded retrains replayed (handlers.backtest_starts)
    unchecked: list[str] = field(default_factory=list)  # the draft's retrains with checks nothing was read for
    truncated: bool = False
    durations: dict[str, timedelta] = field(default_factory=dict)
    models: dict[str, ModelReport] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def model(self, name: str) -> ModelReport:
        return self.models.setdefault(name, ModelReport(name))

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "since": self.since,
            "until": self.until,
            "replayed": self.replayed,
            "unreplayable": list(self.unreplayable),
            "operator_requests": self.operator,
            "reconciler_starts": self.reconciler,
            "unchecked": list(self.unchecked),
            "truncated": self.truncated,
            "durations": {k: int(v.total_seconds()) for k, v in sorted(self.durations.items())},
            "models": [self.models[m].to_dict() for m in sorted(self.models)],
            "notes": list(self.notes),
        }
