"""The ledger contract, run on every ledger: SQLite in a temp dir and Azure Tables on Azurite.

What the service relies on: an event is claimed once, redelivered events find their decisions, a
model's guard state changes atomically under concurrent writers, the audit trail reads newest
first, and retention removes old records but never work in flight.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from handlers import guards, recorded
from handlers.notify import notification_id, notification_of
from handlers.ports import Ledger
from handlers.records import DecisionRecord, ModelState, iso
from handlers.signals import DriftDetected, Trigger
from tests.ledgers import LedgerSpec

pytestmark = pytest.mark.both_ledgers  # the contract every ledger keeps

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
TOPIC = "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w"


def trig(event_id: str, event_type: str = "Microsoft.MachineLearningServices.DatasetDriftDetected") -> Trigger:
    return Trigger(TOPIC, event_id, event_type)


def record(decision_id: str, model: str | None = "m1", outcome: str = "skipped", at: datetime = NOW) -> DecisionRecord:
    return DecisionRecord(
        id=decision_id,
        model=model,
        action="retrain",
        outcome=outcome,
        reason=f"reason of {decision_id}",
        trigger={"source": TOPIC, "event_id": decision_id, "event_type": "x"},
        at=iso(at),
    )


@pytest.fixture
def ledger(ledger_spec: LedgerSpec) -> Ledger:
    return ledger_spec.open()


# --------------------------------------------------------------------------- events


def test_a_new_event_is_claimed_once_and_a_finished_one_returns_its_decisions(ledger: Ledger) -> None:
    assert ledger.claim_event(trig("e1"), NOW, LEASE).status == "new"
    assert ledger.claim_event(trig("e1"), NOW, LEASE).status == "busy"  # another instance holds it
    ledger.finish_event(trig("e1"), ["d1"], NOW, [record("d1")])
    claim = ledger.claim_event(trig("e1"), NOW + timedelta(hours=1), LEASE)
    assert (claim.status, claim.decisions) == ("done", ("d1",))
    assert ledger.get_decision("d1") == record("d1")


def test_the_same_id_from_another_source_or_type_is_another_event(ledger: Ledger) -> None:
    assert ledger.claim_event(trig("e1"), NOW, LEASE).status == "new"
    assert ledger.claim_event(Trigger("/other/topic", "e1", trig("e1").event_type), NOW, LEASE).status == "new"
    assert ledger.claim_event(trig("e1", "Microsoft.MachineLearningServices.RunCompleted"), NOW, LEASE).status == "new"


def test_a_claim_whose_lease_ran_out_is_taken_over_once(ledger: Ledger) -> None:
    ledger.claim_event(trig("e1"), NOW, LEASE)  # this worker died: it never finishes
    later = NOW + LEASE + timedelta(seconds=1)
    assert ledger.claim_event(trig("e1"), later, LEASE).status == "retry"
    assert ledger.claim_event(trig("e1"), later, LEASE).status == "busy"  # the taker holds a fresh lease


def test_an_abandoned_claim_is_retried_at_once(ledger: Ledger) -> None:
    ledger.claim_event(trig("e1"), NOW, LEASE)
    ledger.abandon_event(trig("e1"))  # type: ignore[attr-defined]
    assert ledger.claim_event(trig("e1"), NOW, LEASE).status == "retry"


def test_abandoning_a_finished_event_leaves_it_finished(ledger: Ledger) -> None:
    ledger.claim_event(trig("e1"), NOW, LEASE)
    ledger.finish_event(trig("e1"), [], NOW)
    ledger.abandon_event(trig("e1"))  # type: ignore[attr-defined]
    assert ledger.claim_event(trig("e1"), NOW, LEASE).status == "done"


def test_a_claim_reads_back_as_stored_with_the_request_its_key_is_bound_to(ledger: Ledger) -> None:
    """What handlers/idempotency.py reads before it answers a manual request with records: the claim
    as stored, processing then done, bound to the request digest of the claim that made it."""
    keyed = Trigger("http", "m1:K", "ManualRequest.promote", request="aaa", channel="operator")
    assert ledger.event_claim(keyed) is None  # never claimed
    ledger.claim_event(keyed, NOW, LEASE)
    claim = ledger.event_claim(keyed)
    assert claim is not None
    assert (claim.status, claim.request, claim.first_for, claim.decisions) == (
        "processing",
        "aaa",
        "ManualRequest.promote",
        (),
    )
    assert claim.first_used.startswith("2026-11-25T10:00:00")
    ledger.finish_event(keyed, ["op-1"], NOW + timedelta(seconds=5))
    done = ledger.event_claim(keyed)
    assert done is not None and (done.status, done.request, done.decisions) == ("done", "aaa", ("op-1",))
    assert ledger.event_claim(replace(keyed, channel="event_grid")) is None  # another way in: another key
    assert ledger.event_claim(trig("never")) is None


def test_concurrent_claims_of_one_event_make_exactly_one_owner(ledger_spec: LedgerSpec) -> None:
    ledgers = [ledger_spec.open() for _ in range(8)]
    statuses: list[str] = []
    barrier = threading.Barrier(len(ledgers))

    def claim(ledger: Ledger) -> None:
        barrier.wait()
        statuses.append(ledger.claim_event(trig("storm"), NOW, LEASE).status)

    threads = [threading.Thread(target=claim, args=(x,)) for x in ledgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == ["busy"] * 7 + ["new"]


def test_event_status_tells_processing_from_done(ledger: Ledger) -> None:
    assert ledger.event_status(trig("e1")) is None
    ledger.claim_event(trig("e1"), NOW, LEASE)
    assert ledger.event_status(trig("e1")) == ("processing", [])
    ledger.finish_event(trig("e1"), ["d1", "d2"], NOW)
    assert ledger.event_status(trig("e1")) == ("done", ["d1", "d2"])


def test_a_claim_keeps_its_signal_and_arrival_for_a_replay_oldest_first(ledger: Ledger) -> None:
    """``retrain backtest`` replays what the claims kept: the signal as JSON and when the event arrived."""
    drift = DriftDetected(trig("e2"), TOPIC, "mon", "sig", 0.4, "v2", "breach", {"k": "v"}, {"t": "1"})
    ledger.claim_event(trig("e2"), NOW + timedelta(minutes=5), LEASE, recorded.encode(drift))
    ledger.claim_event(trig("e1"), NOW, LEASE)  # a claim without a signal (an operator's, or made before)
    ledger.claim_event(trig("e0"), NOW - timedelta(days=2), LEASE, recorded.encode(drift))  # before the window
    ledger.finish_event(trig("e2"), ["d2"], NOW + timedelta(minutes=5))
    ledger.claim_event(trig("e2"), NOW + timedelta(hours=1), LEASE, None)  # a redelivery changes nothing kept
    events = ledger.recorded_events(NOW - timedelta(days=1), 10)
    assert [(e.event_id, e.received_at, e.status, e.decisions) for e in events] == [
        ("e1", iso(NOW), "processing", ()),
        ("e2", iso(NOW + timedelta(minutes=5)), "done", ("d2",)),
    ]
    assert events[0].signal is None
    assert events[1].signal is not None and recorded.decode(events[1].signal) == drift
    assert (events[1].source, events[1].event_type) == (TOPIC, trig("e2").event_type)
    assert [e.event_id for e in ledger.recorded_events(NOW - timedelta(days=3), 2)] == ["e0", "e1"]  # the limit


def test_a_signal_over_what_a_ledger_keeps_is_not_kept_and_its_claim_is(ledger: Ledger) -> None:
    drift = DriftDetected(trig("e1"), TOPIC, "mon", "sig", 0.4, "v2", "breach", {"k": "v" * recorded.MAX_SIGNAL})
    assert recorded.encode(drift) is None
    assert ledger.claim_event(trig("e1"), NOW, LEASE, recorded.encode(drift)).status == "new"
    [event] = ledger.recorded_events(NOW, 10)
    assert (event.event_id, event.signal) == ("e1", None)


# --------------------------------------------------------------------------- models


def test_an_unknown_model_has_an_empty_state(ledger: Ledger) -> None:
    state = ledger.get_model("never-seen")
    assert (state.model, state.flights, state.last_retrain_at, state.budget_used) == ("never-seen", {}, None, 0)
    assert ledger.list_models() == []


def test_update_model_writes_only_what_the_change_returns(ledger: Ledger) -> None:
    assert ledger.update_model("m1", lambda s: (None, "nothing")) == "nothing"
    assert ledger.list_models() == []
    assert ledger.update_model("m1", lambda s: (replace(s, budget_used=s.budget_used + 1), "wrote")) == "wrote"
    assert ledger.get_model("m1").budget_used == 1
    assert [s.model for s in ledger.list_models()] == ["m1"]


def test_model_names_with_characters_table_keys_forbid_round_trip(ledger: Ledger) -> None:
    for name in ("team/churn#1", "a?b\\c", "plain"):
        ledger.update_model(name, lambda s: (replace(s, budget_used=7), None))
        assert ledger.get_model(name).budget_used == 7
    assert sorted(s.model for s in ledger.list_models()) == ["a?b\\c", "plain", "team/churn#1"]


def test_concurrent_updates_lose_nothing(ledger_spec: LedgerSpec) -> None:
    """The read-modify-write of guard state is atomic: 8 writers x 15 increments make 120."""
    writers, each = 8, 15
    barrier = threading.Barrier(writers)

    def bump(ledger: Ledger) -> None:
        barrier.wait()
        for _ in range(each):
            ledger.update_model("m1", lambda s: (replace(s, budget_used=s.budget_used + 1), None))

    threads = [threading.Thread(target=bump, args=(ledger_spec.open(),)) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger_spec.open().get_model("m1").budget_used == writers * each


def test_concurrent_reservations_grant_one_flight(ledger_spec: LedgerSpec) -> None:
    verdicts: list[guards.Verdict] = []
    barrier = threading.Barrier(8)

    def reserve(n: int, ledger: Ledger) -> None:
        barrier.wait()
        verdicts.append(
            ledger.update_model("m1", lambda s: guards.reserve(s, guards.RETRAIN, f"d{n}", NOW, timedelta(hours=6), 3))
        )

    threads = [threading.Thread(target=reserve, args=(n, ledger_spec.open())) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(v.code for v in verdicts) == ["granted"] + ["in_flight"] * 7
    state = ledger_spec.open().get_model("m1")
    assert state.budget_used == 1 and state.flights["retrain"].status == "reserved"


def test_the_state_read_carries_a_concurrency_token_that_changes_on_write(ledger: Ledger) -> None:
    ledger.update_model("m1", lambda s: (replace(s, budget_used=1), None))
    first = ledger.get_model("m1").etag
    ledger.update_model("m1", lambda s: (replace(s, budget_used=2), None))
    assert first and ledger.get_model("m1").etag not in (None, first)


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


# --------------------------------------------------------------------------- retention


def test_purge_removes_old_finished_records_but_never_work_in_flight(ledger: Ledger) -> None:
    old, new = NOW - timedelta(days=40), NOW
    ledger.claim_event(trig("old-done"), old, LEASE)
    ledger.finish_event(trig("old-done"), ["d-old"], old, [record("d-old", at=old)])
    ledger.claim_event(trig("old-processing"), old, LEASE)  # a claim never finished: the lease handles it
    ledger.put_decision(record("d-reserved", outcome="reserved", at=old))
    ledger.claim_event(trig("new-done"), new, LEASE)
    ledger.finish_event(trig("new-done"), ["d-new"], new, [record("d-new", at=new)])

    assert ledger.purge(NOW - timedelta(days=30)) == 2  # the old event and its decision
    assert ledger.get_decision("d-old") is None
    assert {d.id for d in ledger.decisions()} == {"d-reserved", "d-new"}
    assert ledger.get_decision("d-reserved") is not None and ledger.get_decision("d-new") is not None
    assert ledger.event_status(trig("old-processing")) == ("processing", [])
    # An expired event id no longer blocks: the same id is a new event again.
    assert ledger.claim_event(trig("old-done"), NOW, LEASE).status == "new"
    assert ledger.claim_event(trig("new-done"), NOW, LEASE).status == "done"


def test_purge_removes_more_old_decisions_than_one_batch_holds(ledger: Ledger) -> None:
    old = NOW - timedelta(days=40)
    for n in range(130):  # Table Storage deletes a hundred rows per transaction
        ledger.put_decision(record(f"d{n:03}", "m1" if n % 2 else None, at=old + timedelta(seconds=n)))
    ledger.put_decision(record("d-new", "m1", at=NOW))
    assert ledger.purge(NOW - timedelta(days=30)) == 130
    assert [d.id for d in ledger.decisions(limit=1000)] == ["d-new"]
    assert [d.id for d in ledger.decisions("m1", limit=1000)] == ["d-new"]
    assert ledger.decisions(event_id="d007") == [] and ledger.get_decision("d007") is None


def test_purge_with_nothing_old_removes_nothing(ledger: Ledger) -> None:
    ledger.claim_event(trig("e1"), NOW, LEASE)
    ledger.finish_event(trig("e1"), ["d1"], NOW, [record("d1")])
    assert ledger.purge(NOW - timedelta(days=1)) == 0
    assert ledger.get_decision("d1") is not None


def test_model_state_survives_purge(ledger: Ledger) -> None:
    ledger.update_model("m1", lambda s: (ModelState("m1", last_retrain_at=iso(NOW - timedelta(days=90))), None))
    ledger.purge(NOW)
    assert ledger.get_model("m1").last_retrain_at == iso(NOW - timedelta(days=90))


# --------------------------------------------------------------------------- outbox


def test_a_submitted_decision_is_kept_in_the_outbox_once_until_it_is_sent(ledger: Ledger) -> None:
    ledger.put_decision(record("d1", outcome="reserved"))  # reserved: no news yet
    assert ledger.pending_notifications(10) == []
    ledger.put_decision(record("d1", outcome="submitted"))
    ledger.put_decision(record("d1", outcome="submitted"))  # written again (a redelivery): the same one
    [note] = ledger.pending_notifications(10)
    assert note == notification_of(record("d1", outcome="submitted"))
    assert note.id == notification_id("d1", "submitted")
    assert (note.type, note.subject, note.data["id"]) == ("retrain.decision.retrain.submitted", "m1", "d1")
    ledger.mark_notified([note.id], NOW)
    assert ledger.pending_notifications(10) == []
    ledger.put_decision(record("d1", outcome="submitted"))  # sent already: never pending again
    assert ledger.pending_notifications(10) == []


def test_records_written_with_a_finished_event_notify_when_they_fail(ledger: Ledger) -> None:
    ledger.claim_event(trig("e1"), NOW, LEASE)
    ledger.finish_event(trig("e1"), ["s1", "f1"], NOW, [record("s1"), record("f1", outcome="failed")])
    assert [n.id for n in ledger.pending_notifications(10)] == [notification_id("f1", "failed")]


def test_pending_notifications_are_bounded_and_marking_some_leaves_the_rest(ledger: Ledger) -> None:
    for n in range(5):
        ledger.put_decision(record(f"d{n}", outcome="submitted", at=NOW + timedelta(seconds=n)))
    first = ledger.pending_notifications(3)
    assert len(first) == 3
    ledger.mark_notified([n.id for n in first], NOW)
    rest = ledger.pending_notifications(10)
    assert len(rest) == 2
    assert {n.id for n in first} | {n.id for n in rest} == {notification_id(f"d{n}", "submitted") for n in range(5)}


def test_a_notification_is_claimed_by_one_sender_until_its_lease_lapses(ledger: Ledger) -> None:
    for n in range(3):
        ledger.put_decision(record(f"d{n}", outcome="failed", at=NOW + timedelta(seconds=n)))
    first = ledger.claim_notifications(2, NOW, LEASE)
    second = ledger.claim_notifications(10, NOW, LEASE)
    assert len(first) == 2 and len(second) == 1 and not {e.id for e in first} & {e.id for e in second}
    assert ledger.claim_notifications(10, NOW + LEASE - timedelta(seconds=1), LEASE) == []  # all held
    ledger.mark_notified([first[0].id], NOW)
    again = ledger.claim_notifications(10, NOW + LEASE, LEASE)  # the others' claims lapsed; the sent one is gone
    assert sorted(e.id for e in again) == sorted([first[1].id, second[0].id])
    assert len(ledger.pending_notifications(10)) == 2


def test_a_ledger_claims_the_notifications_it_put_in_the_outbox_each_once_and_no_other(ledger_spec: LedgerSpec) -> None:
    mine, theirs = ledger_spec.open(), ledger_spec.open()  # two workers
    for n in range(3):
        mine.put_decision(record(f"d{n}", outcome="failed", at=NOW + timedelta(seconds=n)))
    mine.put_decision(record("r1", outcome="reserved"))  # no news
    theirs.put_decision(record("t1", outcome="failed"))
    mine.put_decision(record("t1", outcome="failed"))  # recorded (and queued) by the other already: not mine
    first = mine.claim_own_notifications(2, NOW, LEASE)
    rest = mine.claim_own_notifications(10, NOW, LEASE)  # over the limit: kept for the next call
    assert (len(first), len(rest)) == (2, 1)
    assert sorted(e.id for e in first + rest) == sorted(notification_id(f"d{n}", "failed") for n in range(3))
    assert all(e.attempts == 0 and e.notification.data["outcome"] == "failed" for e in first + rest)
    assert mine.claim_own_notifications(10, NOW, LEASE) == []  # each once
    # claimed: held from every other sender for the lease, as claim_notifications holds them
    assert [e.id for e in theirs.claim_notifications(10, NOW, LEASE)] == [notification_id("t1", "failed")]
    assert theirs.claim_own_notifications(10, NOW, LEASE) == []  # its own, claimed by it already
    assert len(theirs.claim_notifications(10, NOW + LEASE, LEASE)) == 4  # every claim lapsed; none was sent


def test_a_ledger_leaves_out_a_notification_of_its_own_that_another_sender_claimed(ledger_spec: LedgerSpec) -> None:
    mine, theirs = ledger_spec.open(), ledger_spec.open()
    mine.put_decision(record("d1", outcome="failed"))
    mine.put_decision(record("d2", outcome="failed", at=NOW + timedelta(seconds=1)))
    [taken] = theirs.claim_notifications(1, NOW, LEASE)  # the reconciler's drain, say
    theirs.mark_notified([taken.id], NOW)
    [left] = mine.claim_own_notifications(10, NOW, LEASE)
    assert {taken.id, left.id} == {notification_id("d1", "failed"), notification_id("d2", "failed")}


def test_the_notifications_a_ledger_keeps_for_itself_are_bounded_and_the_rest_wait_for_any_sender(
    ledger: Ledger,
) -> None:
    for n in range(300):  # a worker without a topic: it never claims its own
        ledger.put_decision(record(f"d{n}", outcome="failed"))
    mine = ledger.claim_own_notifications(1000, NOW, LEASE)
    assert 0 < len(mine) <= 256  # not every notification it ever wrote, held in memory
    assert len(mine) + len(ledger.claim_notifications(1000, NOW, LEASE)) == 300


def test_a_worker_that_sends_what_it_writes_holds_it_from_other_senders_until_its_claim_lapses(
    ledger_spec: LedgerSpec,
) -> None:
    """A worker with a topic writes each notification claimed by itself for the lease (from the
    notification's time): it sends it as its delivery ends without claiming it; another sender (the
    reconciler's drain) takes it only once that claim lapsed, as it would take one claimed later."""
    mine, theirs = ledger_spec.open(), ledger_spec.open()
    mine.sends_own(LEASE)
    mine.put_decision(record("d1", outcome="failed"))
    assert theirs.claim_notifications(10, NOW, LEASE) == []  # held by its writer
    assert theirs.claim_notifications(10, NOW + LEASE - timedelta(seconds=1), LEASE) == []
    [own] = mine.claim_own_notifications(10, NOW + timedelta(seconds=1), LEASE)
    assert own.id == notification_id("d1", "failed")
    mine.mark_notified([own.id], NOW + timedelta(seconds=1))
    mine.put_decision(record("d2", outcome="failed"))  # its writer stopped before sending it
    [taken] = theirs.claim_notifications(10, NOW + LEASE, LEASE)  # the claim lapsed: any sender's
    assert taken.id == notification_id("d2", "failed")


def test_concurrent_claims_never_hand_out_a_notification_twice(ledger_spec: LedgerSpec) -> None:
    writer = ledger_spec.open()
    for n in range(30):
        writer.put_decision(record(f"d{n}", outcome="failed", at=NOW + timedelta(seconds=n)))
    claimed: list[str] = []
    start = threading.Barrier(8)

    def claim() -> None:
        ledger = ledger_spec.open()
        start.wait()
        for _ in range(10):
            claimed.extend(e.id for e in ledger.claim_notifications(3, NOW, LEASE))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == sorted({notification_id(f"d{n}", "failed") for n in range(30)})


def test_a_failed_notification_backs_off_then_is_dead_lettered_with_why(ledger: Ledger) -> None:
    ledger.put_decision(record("d1", outcome="failed"))
    [entry] = ledger.claim_notifications(10, NOW, LEASE)
    assert (entry.attempts, entry.error, entry.dead) == (0, "", False)
    ledger.fail_notification(entry.id, NOW, 1, "refused: HTTP 400: bad", NOW + timedelta(minutes=1))
    assert ledger.claim_notifications(10, NOW + timedelta(seconds=59), LEASE) == []  # backing off
    [entry] = ledger.claim_notifications(10, NOW + timedelta(minutes=1), LEASE)
    assert (entry.attempts, entry.error) == (1, "refused: HTTP 400: bad")
    [listed] = ledger.notifications()
    assert listed.attempts == 1 and listed.due == iso(NOW + timedelta(minutes=1)) and not listed.dead
    ledger.fail_notification(entry.id, NOW + timedelta(minutes=2), 2, "refused: HTTP 400: still bad", None)
    assert ledger.pending_notifications(10) == [] and ledger.notifications() == []
    assert ledger.claim_notifications(10, NOW + timedelta(days=1), LEASE) == []
    [dead] = ledger.notifications(dead=True)
    assert (dead.id, dead.attempts, dead.error, dead.dead) == (entry.id, 2, "refused: HTTP 400: still bad", True)
    assert dead.sent == iso(NOW + timedelta(minutes=2))


def test_a_notification_sent_stays_sent_whatever_a_late_failure_says(ledger: Ledger) -> None:
    ledger.put_decision(record("d1", outcome="failed"))
    [entry] = ledger.claim_notifications(10, NOW, LEASE)
    ledger.mark_notified([entry.id], NOW)
    ledger.fail_notification(entry.id, NOW, 1, "refused: HTTP 400: late", None)  # a sender whose lease lapsed
    assert ledger.notifications(dead=True) == [] and ledger.pending_notifications(10) == []


def test_purge_removes_notifications_older_than_the_retention_and_keeps_the_rest(ledger: Ledger) -> None:
    old = NOW - timedelta(days=40)
    ledger.put_decision(record("old-sent", outcome="failed", at=old))
    ledger.put_decision(record("old-pending", outcome="failed", at=old))  # e.g. notifications off: not kept forever
    ledger.put_decision(record("recent", outcome="failed", at=NOW))
    ledger.mark_notified([notification_id("old-sent", "failed")], old)
    ledger.purge(NOW - timedelta(days=30))
    assert [n.id for n in ledger.pending_notifications(10)] == [notification_id("recent", "failed")]


def test_a_sqlite_ledger_from_before_the_outbox_kept_attempts_gains_them(tmp_path: Path) -> None:
    import sqlite3

    from function_app.adapters.sqlite_ledger import SqliteLedger

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the outbox as it was
        db.execute(
            "CREATE TABLE outbox (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, sent_at TEXT, body TEXT NOT NULL)"
        )
    ledger = SqliteLedger(path)
    ledger.put_decision(record("d1", outcome="failed"))
    [entry] = ledger.claim_notifications(10, NOW, LEASE)
    assert entry.attempts == 0 and entry.id == notification_id("d1", "failed")
    SqliteLedger(path)  # opened again: nothing to add


def test_a_sqlite_ledger_from_before_claims_kept_their_signal_gains_the_column(tmp_path: Path) -> None:
    import sqlite3

    from function_app.adapters.sqlite_ledger import SqliteLedger

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the events table as it was, with a claim in it
        db.execute(
            "CREATE TABLE events (key TEXT PRIMARY KEY, source TEXT, event_id TEXT NOT NULL, event_type TEXT, "
            "status TEXT NOT NULL, lease_until TEXT, decisions TEXT NOT NULL DEFAULT '[]', received_at TEXT NOT NULL, "
            "finished_at TEXT, request TEXT)"
        )
        db.execute(
            "INSERT INTO events (key, event_id, status, received_at) VALUES ('k', 'old', 'done', ?)", (iso(NOW),)
        )
    ledger = SqliteLedger(path)
    [old] = ledger.recorded_events(NOW, 10)
    assert (old.event_id, old.signal) == ("old", None)  # kept before the upgrade: it cannot be replayed
