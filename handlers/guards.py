"""Guards: pure rules over a model's state. The ledger applies them atomically.

Each function takes the current :class:`ModelState` and returns the new state (or ``None``
when nothing changes) with a verdict; the ledger writes the new state only if nobody else
wrote in between (a transaction in SQLite, an ETag match in Azure Tables) and otherwise
re-reads and asks again. That is how N concurrent drift events start one retrain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from handlers import freeze
from handlers.approval_rules import RELEASE
from handlers.records import Flight, ModelState, from_iso, iso, span

RETRAIN = "retrain"
ROLLOUT = "rollout"
ACTION_OF = {RETRAIN: "retrain", ROLLOUT: "deploy"}  # what a freeze of each slot's new work names


@dataclass(frozen=True)
class Verdict:
    granted: bool
    reason: str
    code: str  # granted, supersedes, resumed, done, in_flight, frozen, cooldown, budget
    until: str | None = None
    supersedes: str | None = None  # the decision waiting for approval whose slot a newer one takes

    @property
    def resumed(self) -> bool:
        """The decision holds the slot already: its action is resumed (``resumed``) or was carried
        out and confirmed (``done``); either way nothing new is reserved."""
        return self.code in ("resumed", "done")


@dataclass(frozen=True)
class Limits:
    """The guards' limits for one model's retrains (None: no limit)."""

    cooldown: timedelta | None
    budget: int | None
    windows: tuple[Any, ...] = ()  # the model's freeze windows (handlers.freeze.WindowLike)
    approval: Any = None  # deploy.approval when required (handlers.policy.ApprovalRule): deploys wait
    retrain_approval: Any = None  # retrain.approval when required (handlers.policy.Approval): retrains wait

    def of(self, kind: str) -> Limits:
        """The limits of ``kind``'s slot: a retrain's cooldown, budget and the approval it waits for; a
        rollout's has no cooldown or budget, only the freezes and the approval its deploys wait for."""
        if kind == RETRAIN:
            return Limits(self.cooldown, self.budget, self.windows, self.retrain_approval)
        return Limits(None, None, self.windows, self.approval)


def cooldown_until(state: ModelState, cooldown: timedelta) -> datetime | None:
    last = from_iso(state.last_retrain_at)
    return last + cooldown if last else None


def check(
    state: ModelState,
    kind: str,
    decision_id: str,
    now: datetime,
    cooldown: timedelta | None,
    budget: int | None,
    force: bool = False,
    windows: Iterable[freeze.WindowLike] = (),
) -> Verdict:
    """Whether ``decision_id`` may act now, and if not, why (read-only). A freeze (a window of
    ``windows`` or the model's stop switch) refuses new work even with ``force``."""
    flight = state.flights.get(kind)
    if flight and flight.decision == decision_id:
        took = flight.data.get("supersedes")  # the waiting decision it took the slot from, said again if need be
        if flight.status != "reserved":
            return Verdict(
                True, f"decision {decision_id} was carried out already (job {flight.job})", "done", None, took
            )
        return Verdict(True, f"resuming decision {decision_id} reserved at {flight.since}", "resumed", None, took)
    # a decision waiting for approval (not being released) gives its slot to a newer one: a newer candidate's
    # deploy, a newer signal's retrain past the cooldown (handlers.approvals)
    waiting = flight is not None and flight.status == "pending" and RELEASE not in flight.data
    if flight and not force and not waiting:
        what = f"job {flight.job}" if flight.job else f"decision {flight.decision}"
        what += ", which waits for approval" if flight.status == "pending" else ""
        return Verdict(
            False, f"a {kind} is already in flight for this model ({what}, since {flight.since})", "in_flight"
        )
    frozen = freeze.frozen(state.frozen, windows, ACTION_OF[kind], now)
    if frozen is not None:
        return Verdict(False, f"frozen by {frozen.reason}", "frozen", frozen.until)
    if cooldown is not None and not force:
        until = cooldown_until(state, cooldown)
        if until and now < until:
            return Verdict(
                False,
                f"model is in cooldown until {iso(until)} (cooldown {span(cooldown)} after the retrain "
                f"started at {state.last_retrain_at})",
                "cooldown",
                iso(until),
            )
    if budget is not None:
        used = state.budget_used if state.budget_day == now.date().isoformat() else 0
        if used >= budget:
            return Verdict(False, f"daily retrain budget used up ({used} of {budget} on {now.date()})", "budget")
    if waiting and flight is not None:
        why = f"supersedes decision {flight.decision}, which waited for approval"
        return Verdict(True, why, "supersedes", supersedes=flight.decision)
    return Verdict(True, "granted", "granted")


def reserve(
    state: ModelState,
    kind: str,
    decision_id: str,
    now: datetime,
    cooldown: timedelta | None,
    budget: int | None,
    force: bool = False,
    windows: Iterable[freeze.WindowLike] = (),
) -> tuple[ModelState | None, Verdict]:
    """Take the model's ``kind`` slot for ``decision_id`` if the rules allow it."""
    verdict = check(state, kind, decision_id, now, cooldown, budget, force, windows)
    if not verdict.granted or verdict.resumed:
        return None, verdict
    flights = {
        **state.flights,
        kind: Flight(
            decision=decision_id,
            since=iso(now),
            previous_retrain_at=state.last_retrain_at,
            data={"supersedes": verdict.supersedes} if verdict.supersedes else {},
        ),
    }
    if kind != RETRAIN:
        return replace(state, flights=flights), verdict
    today = now.date().isoformat()
    used = (state.budget_used if state.budget_day == today else 0) + 1
    return replace(state, flights=flights, budget_used=used, budget_day=today, last_retrain_at=iso(now)), verdict


def confirm(
    state: ModelState,
    kind: str,
    decision_id: str,
    outcome: str,
    job: str | None,
    give_back: bool = True,
    skipped_gives_back: bool = False,
) -> tuple[ModelState | None, bool]:
    """Record the outcome of the reserved action. ``submitted`` and ``pending`` keep the slot;
    ``planned``, ``skipped`` and ``failed`` free the
    slot; ``failed`` also gives back the cooldown and budget the reservation took, unless
    ``give_back`` is False (the action may have run: what it took stands); so does ``skipped`` when
    ``skipped_gives_back`` (a retrain found not worth submitting: nothing ran). ``reserved``: the outcome
    written did not land, a reservation stands (a stale worker's, refused by
    :func:`handlers.records.may_replace`), and its slot is the worker's that holds it: nothing changes."""
    if outcome == "reserved":
        return None, False
    flight = state.flights.get(kind)
    if flight is None or flight.decision != decision_id:
        return None, False
    flights = dict(state.flights)
    kept = {k: v for k, v in flight.data.items() if k != LET_GO}  # acted on: nothing left to let go
    if outcome == "submitted":
        flights[kind] = replace(flight, status="submitted", job=job, data=kept)
        return replace(state, flights=flights), True
    if outcome == "pending":  # waits for a person's approval, holding the slot (handlers.approvals)
        flights[kind] = replace(flight, status="pending", data=kept)
        return replace(state, flights=flights), True
    del flights[kind]
    if (outcome == "failed" or (outcome == "skipped" and skipped_gives_back)) and kind == RETRAIN and give_back:
        return replace(
            state,
            flights=flights,
            last_retrain_at=flight.previous_retrain_at,
            budget_used=max(0, state.budget_used - 1),
        ), True
    return replace(state, flights=flights), True


def release(state: ModelState, kind: str, decision_id: str | None, job: str | None) -> tuple[ModelState | None, bool]:
    """Free the slot when its work has finished (the run completed, failed or was cancelled)."""
    flight = state.flights.get(kind)
    if flight is None:
        return None, False
    if (decision_id and flight.decision == decision_id) or (job and flight.job == job):
        return replace(state, flights={k: f for k, f in state.flights.items() if k != kind}), True
    return None, False


def stale(flight: Flight, now: datetime, lease: timedelta) -> bool:
    """A reservation whose action never confirmed: reserved (or last taken over) at least ``lease`` ago, or
    let go by its worker (:func:`let_go`)."""
    if flight.status != "reserved":
        return False
    if flight.data.get(LET_GO):
        return True
    taken = _taken_at(flight)
    return taken is None or taken + lease <= now


def _taken_at(flight: Flight) -> datetime | None:
    """When the worker that holds ``flight`` reserved it, or last took it over."""
    return max((t for t in (from_iso(flight.since), from_iso(flight.data.get("resumed_at"))) if t), default=None)


def overdue(flight: Flight, now: datetime, grace: timedelta) -> bool:
    """A submitted job that has held its slot for ``grace`` or longer: its run may have ended with an
    event that never arrived, so the reconciler asks the workspace how it stands."""
    since = from_iso(flight.since)
    return flight.status == "submitted" and bool(flight.job) and (since is None or since + grace <= now)


def take_over(
    state: ModelState, kind: str, decision_id: str, now: datetime, lease: timedelta
) -> tuple[ModelState | None, bool]:
    """Let the reconciler resume ``decision_id``'s stale reservation, once: the flight notes when it was
    taken over, so another pass (or instance) leaves it alone for a lease. False when it is no
    longer this decision's, no longer reserved, or was taken over within the lease."""
    flight = state.flights.get(kind)
    if flight is None or flight.decision != decision_id or not stale(flight, now, lease):
        return None, False
    data = {k: v for k, v in flight.data.items() if k != LET_GO}
    taken = replace(flight, data={**data, "resumed_at": iso(now)})
    return replace(state, flights={**state.flights, kind: taken}), True


LET_GO = "let_go"  # in a reserved flight's data: its worker stopped acting (a transient failure)


def let_go(state: ModelState, kind: str, decision_id: str, now: datetime) -> tuple[ModelState | None, bool]:
    """The worker acting on ``decision_id``'s reservation, which it reserved or took over at ``now``, met a
    transient failure and stopped: the next resumer (the event's redelivery, the reconciler) takes it over at
    once (:func:`take_over`), not after a lease. Nothing when the reservation is no longer that worker's (taken
    over since, by one that may be acting: it keeps its lease)."""
    flight = state.flights.get(kind)
    if flight is None or flight.decision != decision_id or flight.status != "reserved" or flight.data.get(LET_GO):
        return None, False
    taken = _taken_at(flight)
    if taken is None or iso(taken) != iso(now):  # taken over since: not this worker's to let go
        return None, False
    data = {k: v for k, v in flight.data.items() if k != "resumed_at"}
    return replace(state, flights={**state.flights, kind: replace(flight, data={**data, LET_GO: True})}), True


def switch(state: ModelState, on: dict[str, object] | None) -> tuple[ModelState | None, bool]:
    """Set (``on``: by, why, at, actions) or lift (None) the model's stop switch; False when it was so."""
    if state.frozen == on:
        return None, False
    return replace(state, frozen=dict(on) if on is not None else None), True
