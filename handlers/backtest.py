"""``retrain backtest``: the recorded events replayed through a draft policy's pure decisions.

Each event the ledger kept (its signal and its arrival, :mod:`handlers.recorded`) since a moment is
decided again, in the order and at the clock it arrived, by :func:`handlers.decisions.decide` with the
draft policy, and each decision that would act is put to the slot guards (:func:`handlers.guards.check`:
single flight, freezes, cooldown, daily budget, with the draft's limits) against a copy of the guard
state held in memory. Nothing is written and nothing outside the ledger is read. Beside it, what was
recorded for the same event (:mod:`handlers.backtest_report` counts both alike).

How the copy moves (also the report's ``notes``):

- it starts empty at the window's start; the stop switch changes as the window's recorded
  ``freeze``/``unfreeze`` decisions changed it;
- a retrain the draft starts takes the slot, cooldown and budget as a reservation does
  (:func:`handlers.guards.reserve`) and holds the slot until its run's recorded completion (the same
  event gives the same decision, so the same job) or, for a run that was never recorded, for its
  pipeline's mean recorded duration (none recorded: it holds no slot);
- the completion of a recorded run of this service whose retrain the draft would not have started is
  a skip (the run would not exist); a run the draft started releases its slot when its completion arrives;
- a deploy is put to the freezes only and counted ``started`` before the candidate gate, which needs
  the candidate's metrics from the workspace; a rollout's own single flight is not replayed;
- a retrain whose plan has checks (a veto signal, the worthiness of the champion's data) is judged by
  :func:`handlers.worthiness.judge` on what the record of the same decision kept of them
  (:func:`handlers.worthiness.recorded_facts`): not worth it, its reservation is given back as the
  executor gives it back; nothing kept for them (a guard refused the recorded one first, or the recorded
  policy had no such check), it counts as started and the report counts it (``unchecked``);
- the retrains the reconciler started (model age, new data-asset versions, settled bursts) come in at the
  moments they were recorded, decided again by the draft's rules (:mod:`handlers.backtest_starts`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from handlers import backtest_starts, guards, recorded, worthiness
from handlers.backtest_report import NO_MODEL, Difference, Outcome, Report, compute, recorded_outcome
from handlers.decisions import decide
from handlers.keys import ci_get
from handlers.plans import Collect, Retrain, Skip
from handlers.records import DecisionRecord, ModelState, from_iso, iso
from handlers.service import verified
from handlers.signals import OPERATOR, TAG_DECISION, TAG_MODEL, RunFinished, Signal, Trigger

if TYPE_CHECKING:
    from handlers.plans import Decision
    from handlers.policy import Policy
    from handlers.ports import Ledger
    from handlers.recorded import RecordedEvent

LIMIT = 100_000  # events one backtest replays at most (the report says when there were more)
ACTIONS = ("retrain", "deploy", "none", "collect")  # the recorded decisions a policy's rules make (not rollouts)
NOTES = (
    "the guard state starts empty at the window's start (no cooldown, budget or flight from before it)",
    "a retrain the draft starts holds its slot until its run's recorded completion, or for its pipeline's mean "
    "recorded duration when that run was never recorded",
    "deploys meet the freezes only and count as started before the candidate gate (it needs the candidate's "
    "metrics from the workspace); a rollout's single flight and the alerts' rollout guards are not replayed",
    "a retrain's checks before submission (a veto signal in its monitor run, the worthiness of the champion's data) "
    "are judged again on what was read for the same decision when it was recorded; one whose checks were never read "
    "(a guard refused it first, or the recorded policy had no such check) counts as started",
    backtest_starts.NOTE,
)


def _tag(signal: RunFinished) -> tuple[str, str]:
    return str(ci_get(signal.run_tags, TAG_DECISION) or ""), str(ci_get(signal.run_tags, TAG_MODEL) or "")


class Replay:
    """One backtest: the draft, the copy of the guard state, and what the draft started so far."""

    def __init__(
        self,
        draft: Policy,
        workspaces: frozenset[str],
        durations: dict[str, timedelta],
        recorded: Callable[[str], DecisionRecord | None] = lambda _: None,
    ) -> None:
        self.draft = draft
        self.recorded = recorded  # the record of a decision id, for what it kept of its checks' facts
        self.workspaces = workspaces
        self.durations = durations
        self.completions: dict[str, datetime] = {}  # a recorded run's retrain decision -> its completion
        self.states: dict[str, ModelState] = {}
        self.ends: dict[str, tuple[str, datetime]] = {}  # model -> (its retrain in flight, when it ends)
        self.recorded_runs: set[str] = set()  # the retrains recorded as started (their runs were real)
        self.started: set[str] = set()
        self.decided: set[str] = set()
        self.unestimated: set[str] = set()  # pipelines of the draft's runs with no recorded duration
        self.unchecked: list[str] = []  # the draft's retrains started with checks nothing was recorded for
        self.switches: list[DecisionRecord] = []  # the recorded freezes and unfreezes still to come, oldest first

    def state(self, model: str) -> ModelState:
        return self.states.setdefault(model, ModelState(model))

    def switch(self, record: DecisionRecord) -> None:
        """The stop switch as a recorded ``freeze``/``unfreeze`` set it."""
        if record.model is not None:
            switch = record.details.get("switch")
            self.states[record.model] = replace(self.state(record.model), frozen=switch or None)

    def until(self, moment: str, now: datetime) -> None:
        """The stop switch as the window's records set it up to ``moment``, and the slots freed by ``now``."""
        while self.switches and self.switches[0].at <= moment:
            self.switch(self.switches.pop(0))
        self.advance(now)

    def advance(self, now: datetime) -> None:
        """Free the slots of the draft's retrains whose runs have ended by ``now``."""
        for model, (decision, end) in list(self.ends.items()):
            if end <= now:
                new, _ = guards.release(self.state(model), guards.RETRAIN, decision, None)
                self.states[model] = new or self.state(model)
                del self.ends[model]

    def outcomes(self, signal: Signal, now: datetime) -> list[tuple[str | None, Outcome]]:
        """What the draft does with ``signal`` at ``now``: each decision's model and outcome."""
        if isinstance(signal, RunFinished) and signal.ours and not signal.is_child:
            decision, model = _tag(signal)
            if decision not in self.started:
                why = f"run {signal.run_id} would not exist: the draft would not have started retrain {decision}"
                return [(model, Outcome("none", "skipped", None, why))]
        out = []
        for d in decide(signal, self.draft, self.workspaces):
            if d.id in self.decided:  # decided before, from another event about the same run
                continue
            self.decided.add(d.id)
            out.append((d.model, self._guarded(d, now)))
        return out

    def reconciler(self, record: DecisionRecord, now: datetime) -> list[tuple[str | None, Outcome]]:
        """What the draft does with the reconciler's recorded retrain ``record`` at ``now``."""
        d = backtest_starts.redecide(self.draft, record, now)
        if d.id in self.decided:
            return []
        self.decided.add(d.id)
        return [(d.model, self._guarded(d, now))]

    def _checked(self, d: Retrain, now: datetime) -> Outcome | None:
        """The skip of a retrain its checks find not worth it, judged on what its record kept, with its
        reservation given back (None: it goes ahead)."""
        kept = self.recorded(d.id)
        facts, missing = worthiness.recorded_facts(d.job, kept.details if kept is not None else {})
        judged = worthiness.judge(d.job, facts)
        if judged.skip is None:
            if missing:
                self.unchecked.append(d.id)
            return None
        state = self.state(d.model)
        new, _ = guards.confirm(state, guards.RETRAIN, d.id, "skipped", None, True, skipped_gives_back=True)
        self.states[d.model] = new or state
        return Outcome("retrain", "skipped", None, judged.skip)

    def _guarded(self, d: Decision, now: datetime) -> Outcome:
        if isinstance(d, Skip):
            return Outcome("none", "skipped", None, d.reason)
        if isinstance(d, Collect):  # new data: its burst's retrain is the reconciler's (backtest_starts)
            why = f"{d.reason}: counted into a burst (its retrain, the reconciler's, is replayed where it was recorded)"
            return Outcome("none", "skipped", None, why)
        if d.dry_run:
            return Outcome(d.action, "skipped", None, f"dry run: {d.reason}")
        retrain = isinstance(d, Retrain)
        kind = guards.RETRAIN if retrain else guards.ROLLOUT
        urgent = isinstance(d, Retrain) and d.urgent  # a retrain_now signal's: past the cooldown
        cooldown = self.draft.cooldown(d.model) if retrain and not urgent else None
        budget = self.draft.daily_budget(d.model) if retrain else None
        windows = self.draft.freeze_windows(d.model)
        state = self.state(d.model)
        verdict = guards.check(state, kind, d.id, now, cooldown, budget, d.force, windows)
        if not verdict.granted:
            return Outcome(d.action, "refused", verdict.code, verdict.reason)
        if not isinstance(d, Retrain):
            return Outcome(d.action, "started", None, d.reason)
        new, _ = guards.reserve(state, kind, d.id, now, cooldown, budget, d.force, windows)
        self.states[d.model] = new or state
        unworthy = self._checked(d, now) if d.job.checks else None
        if unworthy is not None:
            return unworthy
        self.started.add(d.id)
        end = self.completions.get(d.id)
        if end is None and d.id in self.recorded_runs:  # its real run had not ended when the window did
            end = datetime.max.replace(tzinfo=UTC)
        if end is None:  # a run that was never recorded: its pipeline's mean recorded duration
            duration = self.durations.get(d.job.component)
            if duration is None:
                self.unestimated.add(d.job.component)
            end = now + (duration or timedelta())
        self.ends[d.model] = (d.id, end)
        return Outcome("retrain", "started", None, d.reason, d.job.component)


def backtest(
    ledger: Ledger, draft: Policy, name: str, workspaces: Iterable[str], since: datetime, now: datetime
) -> Report:
    """Replay the events the ledger kept from ``since`` to ``now`` through ``draft`` (the policy file
    ``name``), beside what was recorded. Reads the ledger; writes nothing."""
    from handlers.envelopes import workspace_key

    report = Report(name, iso(since), iso(now), notes=list(NOTES))
    kept = {r.id: r for r in ledger.decisions(None, LIMIT, since=since)}

    def record(decision_id: str) -> DecisionRecord | None:
        return kept.get(decision_id) or ledger.get_decision(decision_id)

    replay = Replay(draft, frozenset(workspace_key(w) for w in workspaces), {}, record)
    replayed = _read(ledger, replay, report, since, now)
    starts = sorted((r for r in kept.values() if backtest_starts.replayed(r)), key=lambda r: r.at)
    replay.recorded_runs.update(r.id for r in starts if recorded_outcome(r).result == "started")
    records = [r for _, _, rs in replayed for r in rs] + starts
    report.durations = replay.durations = _durations(records, replay.completions)
    replay.switches = sorted(
        (r for r in kept.values() if r.action in ("freeze", "unfreeze") and r.outcome == "submitted"),
        key=lambda r: r.at,
    )
    seen: set[str] = set()
    for event, signal, records in replayed:
        _reconciler_until(replay, report, starts, event.received_at, now)
        at = from_iso(event.received_at) or now
        replay.until(event.received_at, at)
        draft_side = replay.outcomes(signal, at)
        recorded_side = []
        for r in records:
            if r.action in ACTIONS and r.id not in seen:
                seen.add(r.id)
                recorded_side.append((r.model, recorded_outcome(r)))
        _compare(report, (event.received_at, event.event_id, event.event_type), recorded_side, draft_side)
        report.replayed += 1
    _reconciler_until(replay, report, starts, iso(now), now)
    report.unchecked = list(replay.unchecked)
    if replay.unchecked:
        report.notes.append(
            f"{len(replay.unchecked)} retrain(s) the draft starts have checks nothing was read for when recorded: "
            "counted as started"
        )
    report.notes += [
        f"the draft's runs of {c}, which has no recorded run, hold no slot (no duration to hold it for)"
        for c in sorted(replay.unestimated)
    ]
    for m in report.models.values():
        m.recorded_compute = compute(m.recorded, report.durations)
        m.draft_compute = compute(m.draft, report.durations)
    return report


def _read(
    ledger: Ledger, replay: Replay, report: Report, since: datetime, now: datetime
) -> list[tuple[RecordedEvent, Signal, list[DecisionRecord]]]:
    """The kept events with a signal to replay, their records, and what they tell of recorded runs."""
    events = ledger.recorded_events(since, LIMIT + 1)
    report.truncated = len(events) > LIMIT
    replayed: list[tuple[RecordedEvent, Signal, list[DecisionRecord]]] = []
    for event in events[:LIMIT]:
        records = [r for r in map(replay.recorded, event.decisions) if r is not None]
        try:
            signal = recorded.decode(event.signal) if event.signal else None
        except ValueError:
            signal = None
        if signal is None:
            if any(r.trigger.get("channel") == OPERATOR for r in records):
                report.operator += 1  # a rollback, promote, pause or resume: no policy decides it
            else:
                report.unreplayable.append(event.event_id)
            continue
        signal = verified(signal, ledger)
        if isinstance(signal, RunFinished) and signal.ours and not signal.is_child:
            replay.completions.setdefault(_tag(signal)[0], from_iso(event.received_at) or now)
        replayed.append((event, signal, records))
        replay.recorded_runs.update(r.id for r in records if recorded_outcome(r).result == "started")
    return replayed


def _reconciler_until(replay: Replay, report: Report, starts: list[DecisionRecord], moment: str, now: datetime) -> None:
    """The reconciler's recorded retrains up to ``moment`` (taken off ``starts``), each at its own moment."""
    while starts and starts[0].at <= moment:
        start = starts.pop(0)
        at = from_iso(start.at) or now
        replay.until(start.at, at)
        trigger = Trigger.from_dict(start.trigger)
        draft_side = replay.reconciler(start, at)
        recorded_side = [(start.model, recorded_outcome(start))]
        _compare(report, (start.at, trigger.event_id, trigger.event_type), recorded_side, draft_side)
        report.reconciler += 1


def _durations(records: list[DecisionRecord], completions: dict[str, datetime]) -> dict[str, timedelta]:
    """Each pipeline's mean recorded duration: from a retrain's record to its run's recorded completion."""
    runs: dict[str, list[timedelta]] = {}
    for r in records:
        outcome = recorded_outcome(r)
        began, ended = from_iso(r.at), completions.get(r.id)
        if outcome.action == "retrain" and outcome.result == "started" and outcome.component and began and ended:
            runs.setdefault(outcome.component, []).append(ended - began)
    return {c: sum(d, timedelta()) / len(d) for c, d in runs.items()}


def _compare(
    report: Report,
    event: tuple[str, str, str],
    recorded_side: list[tuple[str | None, Outcome]],
    draft_side: list[tuple[str | None, Outcome]],
) -> None:
    """``event``: when it came, its id and type (an event's, or the trigger of a reconciler's retrain)."""
    for model in sorted({m or NO_MODEL for m, _ in recorded_side + draft_side}):
        was = tuple(o for m, o in recorded_side if (m or NO_MODEL) == model)
        would = tuple(o for m, o in draft_side if (m or NO_MODEL) == model)
        entry = report.model(model)
        entry.recorded.extend(was)
        entry.draft.extend(would)
        if sorted(o.label for o in was) != sorted(o.label for o in would):
            entry.differences.append(Difference(*event, was, would))
