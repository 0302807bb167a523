"""Which pending transition an operator's rollback, promote, pause or resume may take the place of
(handlers/rollout/supersede.py), case by case, and the writes that decide who wins when the smoke test's
verdict and the operator's transition race (handlers/rollout/changes.py: judge, supersede): pure rules on
the model's state."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from handlers.operate_rules import Facts, Planned, Refused, plan
from handlers.records import Flight, ModelState
from handlers.rollout import changes, supersede
from handlers.rollout.progress import KINDS, RolloutProgress, Transition
from handlers.rollout.smoke_outage import OUTAGE
from handlers.signals import OperatorRequest, Trigger

NOW = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
FLIGHT = Flight("de-1", "2026-12-07T03:00:00.000Z", "submitted", "ep/cand")
OUTAGE_KEPT = {"since": "2026-12-07T03:10:00.000Z", "times": 3, "last": "2026-12-07T03:20:00.000Z", "until": "x"}
REFUSED_KEPT = {"why": "endpoint ep refused the service's identity (401)", "since": "s", "times": 1, "last": "s"}


def smoke(**details: Any) -> Transition:
    return Transition.of("m", FLIGHT, "smoke", -1, -1, None, "smoke test at 0%", live="blue", **details)


def at(pending: Transition | None, step: int = -1) -> ModelState:
    progress = RolloutProgress("ep", "cand", (10, 100), {"blue": 100} if step >= 0 else None, step, pending=pending)
    return ModelState("m", flights={"rollout": progress.kept_in(FLIGHT)})


def ask(action: str, event_id: str = "req-1") -> OperatorRequest:
    return OperatorRequest(Trigger("http", event_id, f"ManualRequest.{action}"), "m", action, "ops")


def pending_of(state: ModelState) -> Transition | None:
    progress = RolloutProgress.of(state.flights.get("rollout"))
    return None if progress is None else progress.pending


@pytest.mark.parametrize(
    ("pending", "may"),
    [
        (smoke(), True),  # its requests being sent, or not sent yet
        (smoke(outage=OUTAGE_KEPT), True),  # waiting out an outage
        (smoke(deferred=REFUSED_KEPT), True),  # refused (401) or throttled (429)
        (smoke(outage=OUTAGE_KEPT, judged="2026-12-07T03:30:00.000Z"), False),  # its verdict is being recorded
        *[
            (Transition.of("m", FLIGHT, kind, 0, 0, {"cand": 100} if kind == "step" else None, "why"), False)
            for kind in KINDS
            if kind != "smoke"  # a step, a promotion, a rollback, a smoke-failed, a load, a comparison, ...
        ],
    ],
    ids=lambda v: v.kind + ("+judged" if "judged" in v.details else "") if isinstance(v, Transition) else str(v),
)
def test_only_a_smoke_test_not_judged_yet_may_be_superseded(pending: Transition, may: bool) -> None:
    assert supersede.supersedable(pending) is may


def test_the_record_says_which_smoke_test_it_superseded_and_why_it_waited() -> None:
    assert supersede.superseded(smoke(outage=OUTAGE_KEPT)) == {
        "id": smoke().id,
        "kind": "smoke",
        "deferred": {"why": OUTAGE, **OUTAGE_KEPT},
    }
    assert supersede.said(smoke(outage=OUTAGE_KEPT)) == (
        f"; it supersedes the smoke test deferred since 2026-12-07T03:10:00.000Z (3 tries): {OUTAGE}"
    )
    assert "(1 try): endpoint ep refused the service's identity (401)" in supersede.said(smoke(deferred=REFUSED_KEPT))
    assert supersede.superseded(smoke())["deferred"] is None
    assert "not judged yet" in supersede.said(smoke())


@pytest.mark.parametrize("action", ["rollback", "promote", "pause"])
def test_an_operator_s_action_takes_the_place_of_a_deferred_smoke_test(action: str) -> None:
    deferred = smoke(outage=OUTAGE_KEPT)
    facts = Facts("Succeeded", {"blue": 100}) if action == "promote" else Facts()

    got = plan(ask(action), at(deferred), facts, NOW)

    assert isinstance(got, Planned) and got.supersedes == deferred and not got.written
    t = got.transition
    kind, target = {"rollback": ("manual-rollback", None), "promote": ("promote-now", {"cand": 100})}.get(
        action, ("pause", None)
    )
    assert (t.kind, t.target, t.step) == (kind, target, -1)
    assert t.details["superseded"] == supersede.superseded(deferred)
    assert t.reason.endswith(supersede.said(deferred))


def test_a_judged_smoke_test_or_any_other_pending_transition_still_refuses_the_operator() -> None:
    judged = smoke(judged="2026-12-07T03:30:00.000Z")
    step = Transition.of("m", FLIGHT, "step", 0, -1, {"blue": 90, "cand": 10}, "step 1")
    for state in (at(judged), at(step)):
        got = plan(ask("rollback"), state, Facts(), NOW)
        assert isinstance(got, Refused) and "is being carried out" in got.why


def test_the_same_request_again_finds_its_own_transition_written_not_a_second_one() -> None:
    mine = plan(ask("rollback"), at(smoke()), Facts(), NOW)
    assert isinstance(mine, Planned)
    again = plan(ask("rollback"), at(mine.transition), Facts(), NOW)
    assert isinstance(again, Planned) and again.written and again.transition == mine.transition


def test_whichever_of_the_verdict_and_the_operator_is_written_first_wins_and_the_other_is_refused() -> None:
    deferred = smoke(outage=OUTAGE_KEPT)
    state = at(deferred)
    got = plan(ask("rollback"), state, Facts(), NOW)
    assert isinstance(got, Planned)
    verdict = replace(deferred, details={**deferred.details, "smoke": {}, supersede.JUDGED: "t"})

    operator_first, ok = changes.supersede(state, "de-1", deferred, got.transition)
    assert ok and operator_first is not None and pending_of(operator_first) == got.transition
    assert changes.judge(operator_first, "de-1", deferred, verdict) == (None, False)  # the verdict is dropped
    other = plan(ask("pause", "req-2"), state, Facts(), NOW)
    assert isinstance(other, Planned)  # a second operator at the same moment: the first one's write wins
    assert changes.supersede(operator_first, "de-1", deferred, other.transition) == (None, False)

    verdict_first, ok = changes.judge(state, "de-1", deferred, verdict)
    assert ok and verdict_first is not None and pending_of(verdict_first) == verdict
    assert changes.supersede(verdict_first, "de-1", deferred, got.transition) == (None, False)  # the operator: 409


def test_a_smoke_test_written_again_after_a_pause_is_not_the_one_a_slow_pass_judged() -> None:
    earlier, again = smoke(written="2026-12-07T03:00:00.000Z"), smoke(written="2026-12-07T03:40:00.000Z")
    assert earlier.id == again.id and not supersede.same(earlier, again)
    verdict = replace(earlier, details={**earlier.details, supersede.JUDGED: "t"})
    assert changes.judge(at(again), "de-1", earlier, verdict) == (None, False)
    assert changes.supersede(at(again), "de-1", earlier, smoke()) == (None, False)


def test_the_flight_counts_the_smoke_tests_an_operator_superseded() -> None:
    first = smoke(written="2026-12-07T03:00:00.000Z")
    paused = plan(ask("pause"), at(first), Facts(), NOW)
    assert isinstance(paused, Planned)

    state, ok = changes.supersede(at(first), "de-1", first, paused.transition)

    assert ok and state is not None
    kept = state.flights["rollout"].data["rollout"]
    assert kept["superseded"] == 1 and RolloutProgress.from_dict(kept).superseded == 1  # as the ledger stores it
    assert "superseded" not in at(first).flights["rollout"].data["rollout"]  # none yet: the shape before
