"""The ledger contract, on every ledger: the decisions' trail (newest first, per model, a final record
never replaced, a reservation and its slot written together). The rest of the contract is in
tests/test_ledger_contract.py.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from handlers.notify import notification_id, notification_of
from handlers.ports import Ledger
from handlers.records import DecisionRecord, ModelState, iso
from tests.contract import LEASE, NOW, record, trig
from tests.ledgers import LedgerSpec

pytestmark = pytest.mark.both_ledgers  # the contract every ledger keeps


# --------------------------------------------------------------------------- decisions


def test_decisions_read_newest_first_per_model_and_for_all(ledger: Ledger) -> None:
    for n, model in enumerate(["m1", "m2", "m1", None]):
        ledger.put_decision(record(f"d{n}", model, at=NOW + timedelta(seconds=n)))
    assert [d.id for d in ledger.decisions()] == ["d3", "d2", "d1", "d0"]
    assert [d.id for d in ledger.decisions("m1")] == ["d2", "d0"]
    assert [d.id for d in ledger.decisions("m1", limit=1)] == ["d2"]
    assert ledger.decisions("m9") == []


def test_rewriting_a_decision_updates_it_in_place_in_the_trail(ledger: Ledger) -> None:
    ledger.put_decision(record("d0", outcome="reserved", at=NOW))
    ledger.put_decision(record("d1", at=NOW + timedelta(seconds=1)))
    ledger.put_decision(record("d0", outcome="submitted", at=NOW + timedelta(seconds=2)))
    assert [(d.id, d.outcome) for d in ledger.decisions("m1")] == [("d1", "skipped"), ("d0", "submitted")]
    assert ledger.get_decision("d0").outcome == "submitted"  # type: ignore[union-attr]


def test_a_skip_written_again_by_a_later_redelivery_stays_one_record_as_first_written(ledger: Ledger) -> None:
    """The first delivery wrote its skip, then died (or lost the ledger) before marking the event
    done; the redelivery, minutes later, writes the same decision again with its own time: the
    record first written stands."""
    ledger.claim_event(trig("e1"), NOW, LEASE)
    ledger.finish_event(trig("e0"), ["d0"], NOW - timedelta(seconds=1), [record("d0", at=NOW - timedelta(seconds=1))])
    ledger.put_decision(record("d1", at=NOW))  # as the first try's finish_event got that far
    later = NOW + timedelta(minutes=5)
    ledger.finish_event(trig("e1"), ["d1"], later, [record("d1", at=later)])
    assert [(d.id, d.at) for d in ledger.decisions("m1")] == [
        ("d1", iso(NOW)),
        ("d0", iso(NOW - timedelta(seconds=1))),
    ]
    assert [d.id for d in ledger.decisions()] == ["d1", "d0"]
    assert ledger.event_status(trig("e1")) == ("done", ["d1"])


def guard_skip(decision_id: str, at: datetime = NOW) -> DecisionRecord:
    """What a redelivery decides when the model's slot is free again: a refusal by a guard."""
    return replace(
        record(decision_id, at=at),
        reason="model is in cooldown until ...",
        details={"guard": "cooldown", "until": iso(at + timedelta(hours=6))},
    )


def test_a_model_s_history_is_its_decisions_but_its_refusals_newest_first_however_many_refusals_followed(
    ledger: Ledger,
) -> None:
    ledger.put_decision(replace(record("promoted", outcome="submitted"), action="promote"))
    ledger.put_decision(replace(record("lost", at=NOW + timedelta(seconds=1)), details={"compare": {}}))
    ledger.put_decision(guard_skip("taken", at=NOW + timedelta(seconds=2)))
    ledger.put_decision(record("taken", outcome="reserved", at=NOW + timedelta(seconds=3)))  # gave way
    ledger.put_decision(replace(record("other", "m2", outcome="submitted"), action="promote"))
    for n in range(205):
        ledger.put_decision(guard_skip(f"refused-{n}", at=NOW + timedelta(minutes=1, seconds=n)))
    assert "promoted" not in {d.id for d in ledger.decisions("m1", 200)}  # a storm pushed it out of the trail

    assert [(d.id, d.outcome) for d in ledger.model_history("m1")] == [
        ("taken", "reserved"),
        ("lost", "skipped"),
        ("promoted", "submitted"),
    ]
    assert [d.id for d in ledger.model_history("m2")] == ["other"]
    assert ledger.model_history("m9") == []


@pytest.mark.parametrize("final", ["submitted", "planned", "failed", "skipped"])
def test_a_final_record_is_never_replaced_by_another_outcome_and_put_decision_returns_it(
    ledger: Ledger, final: str
) -> None:
    """Finding 2 of issue 21: a redelivery after the slot was freed wrote ``skipped: model is in
    cooldown`` over the decision that had acted. Only a reservation gives way to what came of it."""
    ledger.put_decision(record("d1", outcome="reserved", at=NOW))
    first = replace(record("d1", outcome=final, at=NOW + timedelta(seconds=1)), job={"name": "job-1", "url": None})
    assert ledger.put_decision(first) == first
    later = NOW + timedelta(hours=1)
    for attempt in (
        guard_skip("d1", later),
        record("d1", outcome="reserved", at=later),
        record("d1", "m1", final, later),
    ):
        assert ledger.put_decision(attempt) == first
    ledger.claim_event(trig("e1"), later, LEASE)
    assert ledger.finish_event(trig("e1"), ["d1"], later, [guard_skip("d1", later)]) == [first]  # as stored
    assert ledger.get_decision("d1") == first and ledger.event_status(trig("e1")) == ("done", ["d1"])
    assert ledger.decisions("m1") == [first] and ledger.decisions(event_id="d1") == [first]
    assert [n.id for n in ledger.pending_notifications(10)] == (
        [notification_id("d1", final)] if notification_of(first) is not None else []
    )  # nothing of the refused writes reached the outbox


def test_what_may_replace_a_final_record(ledger: Ledger) -> None:
    """A guard's refusal gives way to a reservation (the executor carries the decision out after all) or
    to a later refusal (judged again from a later event, refused anew: why it is refused now); a failure
    to an action tried again that went through (a retirement retried); nothing else."""
    ledger.put_decision(guard_skip("d1"))
    assert ledger.put_decision(record("d1", outcome="submitted")).outcome == "skipped"
    anew = replace(
        guard_skip("d1", NOW + timedelta(milliseconds=500)), reason="in flight", details={"guard": "in_flight"}
    )
    assert ledger.put_decision(anew) == anew
    older = replace(guard_skip("d1"), reason="stale")
    assert ledger.put_decision(older) == anew  # an older refusal written late does not come back
    reserved = record("d1", outcome="reserved", at=NOW + timedelta(seconds=1))
    assert ledger.put_decision(reserved) == reserved
    ledger.put_decision(record("d2", outcome="failed", at=NOW + timedelta(seconds=2)))
    assert ledger.put_decision(guard_skip("d2")).outcome == "failed"
    assert ledger.put_decision(record("d2", outcome="reserved")).outcome == "failed"
    retried = record("d2", outcome="submitted", at=NOW + timedelta(minutes=5))
    assert ledger.put_decision(retried) == retried
    assert ledger.get_decision("d2") == retried
    assert [(d.id, d.outcome) for d in ledger.decisions("m1")] == [("d2", "submitted"), ("d1", "reserved")]


def test_a_reservation_gives_way_to_what_was_decided_at_or_after_it_only(ledger: Ledger) -> None:
    """What came of a reservation (dated as the reservation by the worker that made it: a gate's skip, a
    submission) replaces it, and so does a guard's refusal decided after it (a reservation nothing
    carries out any more, refused anew); nothing decided before it does: a guard's refusal or an
    outcome of a worker that stalled past its lease, older than the reservation the worker that took
    over made or dated anew."""
    reserved = record("d3", outcome="reserved", at=NOW + timedelta(seconds=90))
    ledger.put_decision(reserved)
    assert ledger.put_decision(guard_skip("d3")) == reserved
    stale = replace(record("d3", outcome="submitted", at=NOW), reason="the stalled worker's submission")
    assert ledger.put_decision(stale) == reserved
    assert ledger.get_decision("d3") == reserved
    later = guard_skip("d3", NOW + timedelta(seconds=91))
    assert ledger.put_decision(later) == later
    ledger.put_decision(record("d4", outcome="reserved", at=NOW + timedelta(seconds=90)))
    gate = replace(
        record("d4", outcome="skipped", at=NOW + timedelta(seconds=90)),
        reason="the candidate does not beat the champion",
    )
    assert ledger.put_decision(gate) == gate  # what came of the reservation, decided as it was made


def test_concurrent_writers_of_one_decision_leave_one_final_record(ledger_spec: LedgerSpec) -> None:
    """Workers racing to write the same decision, each over the reservation it read: the first final
    outcome wins on every ledger (a conditional write, re-read when it loses), and every writer is
    told the record that was stored."""
    spec_ledger = ledger_spec.open()
    spec_ledger.put_decision(record("d1", outcome="reserved"))
    outcomes = ["submitted", "skipped", "planned"] * 4  # none of them may replace another
    results: list[DecisionRecord] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(outcomes))

    def write(outcome: str) -> None:
        mine = ledger_spec.open()
        try:
            start.wait()
            results.append(mine.put_decision(record("d1", outcome=outcome, at=NOW + timedelta(seconds=1))))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(o,)) for o in outcomes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stored = spec_ledger.get_decision("d1")
    assert stored is not None and stored.outcome != "reserved"
    assert results == [stored] * len(outcomes)
    assert [d.outcome for d in spec_ledger.decisions("m1")] == [stored.outcome]


def test_a_large_record_round_trips(ledger: Ledger) -> None:
    big = replace(record("big"), details={"rendered": {"inputs": {f"k{i}": "v" * 500 for i in range(200)}}})
    ledger.put_decision(big)
    assert ledger.get_decision("big") == big
    assert ledger.decisions("m1")[0] == big


def test_each_model_keeps_its_own_trail_whatever_its_name(ledger: Ledger) -> None:
    """One name the start of another, and a name near the cut, each read only their own decisions."""
    long = "m" * 1_900
    for n, model in enumerate(["m1", "m10", long, "m1/x?#"]):
        ledger.put_decision(record(f"d{n}", model, at=NOW + timedelta(seconds=n)))
    assert [d.id for d in ledger.decisions("m1")] == ["d0"]
    assert [d.id for d in ledger.decisions("m10")] == ["d1"]
    assert [d.id for d in ledger.decisions(long)] == ["d2"]
    assert [d.id for d in ledger.decisions("m1/x?#")] == ["d3"]
    assert [d.id for d in ledger.decisions(event_id="d2")] == ["d2"]


def test_an_unknown_decision_is_none(ledger: Ledger) -> None:
    assert ledger.get_decision("nope") is None


def _took(state: ModelState) -> tuple[ModelState | None, int]:
    """A change that counts one into the model's budget (it returns the count it saw)."""
    return replace(state, budget_used=state.budget_used + 1), state.budget_used


def test_a_reservation_writes_the_slot_and_its_record_together_and_a_final_record_takes_nothing(
    ledger: Ledger,
) -> None:
    took, stored = ledger.reserve("m1", _took, lambda _: record("d1", outcome="reserved"))
    assert (took, stored) == (0, record("d1", outcome="reserved"))
    assert ledger.get_model("m1").budget_used == 1 and ledger.get_decision("d1", "m1") == stored
    # a refusal writes nothing, and is not asked for a record
    assert ledger.reserve("m1", lambda s: (None, "refused"), lambda _: pytest.fail("asked")) == ("refused", None)
    # no record given: the state alone
    assert ledger.reserve("m1", _took, lambda _: None) == (1, None) and ledger.get_model("m1").budget_used == 2
    ledger.put_decision(record("d2", outcome="submitted"))
    took, stored = ledger.reserve("m1", _took, lambda _: record("d2", outcome="reserved"))
    assert stored is not None and stored.outcome == "submitted"  # it stands; the slot was not taken
    assert ledger.get_model("m1").budget_used == 2 and ledger.get_decision("d2").outcome == "submitted"  # type: ignore[union-attr]


def test_an_outcome_and_the_change_of_its_slot_are_written_together_by_the_record_stored(ledger: Ledger) -> None:
    ledger.reserve("m1", _took, lambda _: record("d1", outcome="reserved"))
    seen: list[str] = []

    def settle(state: ModelState, stored: DecisionRecord) -> ModelState | None:
        seen.append(stored.outcome)
        return replace(state, budget_used=0) if stored.outcome == "failed" else None

    assert ledger.record_and_update("m1", record("d1", outcome="failed"), settle).outcome == "failed"
    assert ledger.get_model("m1").budget_used == 0
    assert [n.id for n in ledger.pending_notifications(10)] == [notification_id("d1", "failed")]
    # over a final record: it stands, and the change is made by it
    ledger.update_model("m1", lambda s: (replace(s, budget_used=5), None))
    assert ledger.record_and_update("m1", record("d1", outcome="skipped"), settle).outcome == "failed"
    assert seen[-1] == "failed" and ledger.get_model("m1").budget_used == 0
    assert [n.id for n in ledger.pending_notifications(10)] == [notification_id("d1", "failed")]
