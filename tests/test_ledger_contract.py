"""The ledger contract, run on every ledger: SQLite in a temp dir and Azure Tables on Azurite.

What the service relies on: an event is claimed once, redelivered events find their decisions, a
model's guard state changes atomically under concurrent writers, the audit trail reads newest
first, and retention removes old records but never work in flight. The decisions' trail is in
tests/test_ledger_contract_decisions.py, the outbox in tests/test_ledger_contract_outbox.py; what
they share is in tests/contract.py and the ``ledger`` fixture in tests/conftest.py.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from handlers import guards, recorded
from handlers.ports import Ledger
from handlers.records import ModelState, iso
from handlers.signals import DriftDetected, Trigger
from tests.contract import LEASE, NOW, TOPIC, record, trig
from tests.ledgers import LedgerSpec

pytestmark = pytest.mark.both_ledgers  # the contract every ledger keeps


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


def test_adopting_models_gives_none_a_state_until_its_first_write(ledger_spec: LedgerSpec) -> None:
    """What a worker that serves does as it starts, with its policy's models: no state, no listing, no
    trail (the console and ``GET /api/models`` show them as before); their writes work as before, on
    this worker and on one that started before the other adopted them."""
    before = ledger_spec.open()
    ledger = ledger_spec.open()
    ledger.adopt(["m1", "team/churn#1", "m1"])
    ledger_spec.open().adopt(["m1"])  # another worker, starting later: the models are listed already
    assert ledger.list_models() == [] and ledger.decisions() == []
    assert ledger.get_model("m1") == ModelState(model="m1") == before.get_model("m1")
    for writer, name in ((ledger, "m1"), (before, "team/churn#1")):
        assert writer.update_model(name, lambda s: (replace(s, budget_used=s.budget_used + 1), s.budget_used)) == 0
    assert [(s.model, s.budget_used) for s in ledger_spec.open().list_models()] == [("m1", 1), ("team/churn#1", 1)]
    assert before.update_model("m1", lambda s: (replace(s, budget_used=s.budget_used + 1), s.budget_used)) == 1


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
