"""Notifications the topic refuses, on each ledger (the outbox is in the ledger), published through the
real EventGridPublisherClient to a local topic receiver: a refusal is retried a bounded number of
times, then dead-lettered in the ledger with why (no payload); an outage counts no attempt but ends
in a dead letter after the notification's maximum age; a batch refused for one event does not take
the others with it; posts stay under the topic's 1 MB; the CLI lists what waits and what is dead.
Publishing, outages and the topic's auth are in tests/test_notifications.py.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from handlers.errors import PermanentError
from handlers.notify import notification_id
from tests.conftest import Client, retrain_cli
from tests.ledgers import LedgerSpec
from tests.notifying import DEPLOY, failed_deploys, notifier_for, notifying_ids, post
from tests.topic_receiver import TopicReceiver
from tests.world import MODEL, World

pytestmark = pytest.mark.both_ledgers  # the outbox is in the ledger: its claims, leases and dead letters on each


def test_a_topic_that_refuses_everything_gets_bounded_posts_and_each_notification_is_dead_lettered_with_why(
    served: tuple[World, Client], receiver: TopicReceiver
) -> None:
    """A 4xx for every post, 60 deliveries: each delivery posts only its own new notification (the
    refused ones back off, the head of the outbox is not posted again), and each notification is
    posted RETRAIN_NOTIFY_MAX_ATTEMPTS (10) times in all, then dead-lettered in the ledger with the
    topic's status and message, no payload. Before: 60 posts carrying 1,775 events, and for ever."""
    world, client = served
    receiver.refuse(400, "Event data is not valid for the topic's schema")
    world.actions.fail_with = PermanentError("deployment refused: quota")
    for k in range(60):
        status, _ = post(client, DEPLOY, {"version": str(k + 1), "reason": f"secret reason {k}"})
        assert status == 422
    world.actions.fail_with = None
    notes = notifying_ids(world.ledger)
    assert len(notes) == 60
    assert len(receiver.posts) == 60 and sum(map(len, receiver.posts)) == 60  # one post each, itself only

    passes = 0
    while world.ledger.pending_notifications(100) and passes < 500:
        world.clock.advance(minutes=5)
        world.reconcile()
        passes += 1
    assert world.ledger.pending_notifications(100) == []
    posted = Counter(i for p in receiver.posts for i in p)
    assert sorted(posted) == notes and set(posted.values()) == {10}  # 600 posts, 600 events, then no more
    assert len(receiver.posts) == 600 and receiver.accepted == []
    dead = world.ledger.notifications(dead=True, limit=100)
    assert sorted(e.id for e in dead) == notes
    for entry in dead:
        assert entry.dead and entry.attempts == 10 and entry.sent
        assert "400" in entry.error and "Event data is not valid for the topic's schema" in entry.error
        assert "secret reason" not in entry.error and "quota" not in entry.error  # no payload
    world.clock.advance(hours=2)
    assert world.reconcile().notified["attempts"] == 0 and len(receiver.posts) == 600


def test_an_outage_longer_than_the_max_age_dead_letters_at_the_next_failure(
    ledger_spec: LedgerSpec, receiver: TopicReceiver
) -> None:
    """An outage (503) is not a refusal: it backs off (at most an hour apart) and counts no attempt
    towards the cap; a notification still unsent RETRAIN_NOTIFY_MAX_AGE_HOURS after its decision is
    dead-lettered at its next failure, with the status."""
    world = World(ledger_spec, notifier=notifier_for(receiver))
    [note] = failed_deploys(world, 1)
    receiver.outage(True)
    for _ in range(23):
        world.reconcile()
        world.clock.advance(hours=1)
    [entry] = world.ledger.notifications()
    assert entry.attempts >= 12 and not entry.dead and "503" in entry.error  # more than the cap of 10: not dead
    assert receiver.attempts == entry.attempts  # backed off: not a post per pass once an hour apart
    world.clock.advance(hours=2)
    world.reconcile()
    assert world.ledger.pending_notifications(10) == []
    [dead] = world.ledger.notifications(dead=True)
    assert dead.id == note and "503" in dead.error


def test_a_batch_refused_for_one_notification_does_not_dead_letter_the_others(
    ledger_spec: LedgerSpec, receiver: TopicReceiver
) -> None:
    """The topic refuses a whole batch (400) for one bad event in it: each of them is posted alone on
    its next try, so the good ones are sent (once) and only the bad one is dead-lettered."""
    world = World(ledger_spec, notifier=notifier_for(receiver))
    good, bad, other = failed_deploys(world, 3)
    receiver.poisoned = {bad}
    assert world.reconcile().notified["sent"] == []
    [batch] = receiver.posts  # the three together, refused as a whole
    assert sorted(batch) == sorted([good, bad, other])
    for _ in range(40):
        world.clock.advance(minutes=30)
        world.reconcile()
    assert sorted(receiver.ids()) == sorted([good, other])  # each sent once
    [dead] = world.ledger.notifications(dead=True)
    assert dead.id == bad and dead.attempts == 10 and "An event in the batch is not valid" in dead.error
    assert world.ledger.pending_notifications(10) == []


def test_the_cli_lists_the_notifications_waiting_and_those_dead_lettered(
    ledger_spec: LedgerSpec, receiver: TopicReceiver
) -> None:
    import json

    world = World(ledger_spec, notifier=notifier_for(receiver), notify_max_attempts=2)
    receiver.refuse(403, "The client is not authorized to publish to this topic")
    refused = failed_deploys(world, 2)
    world.reconcile()
    world.clock.advance(minutes=5)
    world.reconcile()  # the second refusal: dead-lettered
    receiver.refuse(None)
    receiver.outage(True)
    [waiting] = failed_deploys(world, 1)
    world.reconcile()

    def retrain(*args: str) -> str:
        out = retrain_cli("notifications", *args, env=ledger_spec.settings())
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
        return out.stdout

    pending = retrain()
    assert waiting in pending and "1 failed attempt(s), next try" in pending and "503" in pending
    assert not any(i in pending for i in refused)
    dead = retrain("--dead")
    assert all(i in dead for i in refused) and waiting not in dead
    assert dead.count("why: refused: ") == 2 and "403" in dead and "not authorized to publish" in dead
    rows = json.loads(retrain("--dead", "--json"))
    assert sorted(r["id"] for r in rows) == sorted(refused)
    assert all(r["dead"] and r["attempts"] == 2 and r["type"] == "retrain.decision.deploy.failed" for r in rows)
    assert all("data" not in r for r in rows)


def big_failure(decision_id: str, size: int) -> Any:
    """A failed decision whose record (and so notification) is about ``size`` bytes."""
    from handlers.records import DecisionRecord

    return DecisionRecord(
        id=decision_id,
        model=MODEL,
        action="deploy",
        outcome="failed",
        reason="deployment refused",
        trigger={"source": "http", "event_id": decision_id, "event_type": "ManualRequest.deploy"},
        at="2026-11-25T10:00:00.000Z",
        details={"note": "x" * size},
    )


def test_posts_stay_under_the_topics_1_mb_so_big_notifications_do_not_block_the_others(
    ledger_spec: LedgerSpec, receiver: TopicReceiver
) -> None:
    """Event Grid takes at most 1 MB per post (413 above, as the receiver answers): a batch is split
    into posts under it, so three notifications of 400 KB go in two posts instead of being refused
    together for ever."""
    world = World(ledger_spec, notifier=notifier_for(receiver))
    for k in range(3):
        world.ledger.put_decision(big_failure(f"big-{k}", 400_000))
    report = world.reconcile()
    assert sorted(report.notified["sent"]) == notifying_ids(world.ledger) and len(report.notified["sent"]) == 3
    assert [len(p) for p in receiver.posts] == [2, 1] and 413 not in receiver.refused


def test_a_notification_over_1_mb_alone_is_dead_lettered_without_a_post(tmp_path: Any, receiver: TopicReceiver) -> None:
    """(SQLite only: a Table Storage entity holds less than 1 MB, so there the decision cannot be that big.)"""
    world = World(LedgerSpec("sqlite", str(tmp_path / "ledger.db")), notifier=notifier_for(receiver))
    world.ledger.put_decision(big_failure("huge", 1_100_000))
    world.ledger.put_decision(big_failure("small", 1_000))
    report = world.reconcile()
    assert report.notified["sent"] == [notification_id("small", "failed")]
    assert report.notified["dead"] == [notification_id("huge", "failed")]
    assert receiver.posts == [[notification_id("small", "failed")]]
    [dead] = world.ledger.notifications(dead=True)
    assert dead.id == notification_id("huge", "failed") and "over the topic's 1000000 per post" in dead.error
