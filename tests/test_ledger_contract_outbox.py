"""The ledger contract, on every ledger: the outbox of notifications (kept once until sent, claimed by
one sender for a lease, backed off, dead-lettered, purged). The rest of the contract is in
tests/test_ledger_contract.py.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from handlers.notify import notification_id, notification_of
from handlers.ports import Ledger
from handlers.records import iso
from tests.contract import LEASE, NOW, record, trig
from tests.ledgers import LedgerSpec

pytestmark = pytest.mark.both_ledgers  # the contract every ledger keeps


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
