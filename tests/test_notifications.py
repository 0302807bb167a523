"""Notifications as CloudEvents: the app's own triggers, served by the local host's dispatcher, on
each ledger, publish through the real EventGridPublisherClient to a local topic receiver.

What is shown: every decision that notifies is published once, under an id derived from the decision
and its outcome; an outage of the topic delays notifications (the reconciler sends them later) and
loses none; a delivery makes at most one attempt at the topic, and is answered whatever the topic does.
Refusals, dead letters and the topic's 1 MB limit are in tests/test_notifications_dead_letters.py.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import pytest

from function_app import runtime
from function_app.adapters.notifier import EventGridNotifier
from handlers.errors import PermanentError
from handlers.notify import notification_id
from tests import rbac
from tests.builders import WORKSPACE, drift_event
from tests.conftest import Client
from tests.fake_http import FakeCredential
from tests.ledgers import LedgerSpec
from tests.notifying import DEPLOY, EVENTS, RETRAIN, failed_deploys, notifier_for, notifying_ids, post
from tests.topic_receiver import WORLD, TopicReceiver
from tests.world import MODEL, World

pytestmark = pytest.mark.both_ledgers  # the outbox is in the ledger: its claims, leases and dead letters on each


def test_each_notifying_decision_is_published_once_with_a_stable_id(
    served: tuple[World, Client], receiver: TopicReceiver
) -> None:
    world, client = served
    status, submitted = post(client, RETRAIN, {"reason": "drift seen by hand"}, {"Idempotency-Key": "k1"})
    assert status == 202
    assert receiver.ids() == [notification_id(submitted["id"], "submitted")]  # sent by the delivery itself
    [event] = receiver.accepted
    assert event["type"] == "retrain.decision.retrain.submitted"
    assert event["subject"] == MODEL
    assert event["specversion"] == "1.0"
    assert event["data"]["id"] == submitted["id"] and event["data"]["outcome"] == "submitted"

    assert post(client, RETRAIN, {"reason": "drift seen by hand"}, {"Idempotency-Key": "k1"})[0] == 202  # a retry
    assert post(client, EVENTS, [drift_event()], {"aeg-event-type": "Notification"})[0] == 200  # cooldown: a skip
    world.actions.fail_with = PermanentError("deployment refused: quota")
    status, failed = post(client, DEPLOY, {"version": "7", "reason": "new version"})
    assert failed["outcome"] == "failed"
    world.reconcile()
    world.reconcile()

    ids = receiver.ids()
    assert Counter(ids).most_common(1)[0][1] == 1  # none twice
    assert sorted(ids) == notifying_ids(world.ledger)  # every decision that notifies, and only those
    assert notification_id(failed["id"], "failed") in ids
    assert world.ledger.pending_notifications(10) == []


def test_an_outage_of_the_topic_delays_notifications_and_loses_none(
    served: tuple[World, Client], receiver: TopicReceiver
) -> None:
    world, client = served
    receiver.outage(True)
    answers = []
    for n in range(3):
        before = receiver.attempts
        world.actions.fail_with = PermanentError(f"refused {n}") if n else None
        body = {"reason": f"try {n}"} if n == 0 else {"reason": f"try {n}", "version": str(n)}
        answers.append(post(client, RETRAIN if n == 0 else DEPLOY, body))
        assert receiver.attempts - before == 1  # one attempt per delivery, however many are pending
    assert [status for status, _ in answers] == [202, 422, 422]  # every decision answered, as without a topic
    assert receiver.accepted == []
    pending = {n.id for n in world.ledger.pending_notifications(10)}
    assert pending == set(notifying_ids(world.ledger)) and len(pending) == 3

    world.clock.advance(minutes=2)  # past each one's backoff (30 s, plus jitter)
    report = world.reconcile()  # still down: left pending, said so
    assert report.notified["sent"] == [] and report.notified["more"] is True
    receiver.outage(False)
    world.clock.advance(minutes=3)  # past the backoff of a second failure (60 s, plus jitter)
    report = world.reconcile()
    assert sorted(report.notified["sent"]) == sorted(pending)
    assert sorted(receiver.ids()) == sorted(pending)
    world.reconcile()
    assert sorted(receiver.ids()) == sorted(pending)  # sent once


def test_a_delivery_sends_the_notifications_it_decided_and_leaves_a_backlog_to_the_reconciler(
    served: tuple[World, Client], receiver: TopicReceiver
) -> None:
    world, client = served
    receiver.outage(True)
    for n in range(2):  # two failed deploys, their notifications left pending by the outage
        world.actions.fail_with = PermanentError(f"refused {n}")
        assert post(client, DEPLOY, {"reason": f"try {n}", "version": str(n + 1)})[0] == 422
    backlog = set(notifying_ids(world.ledger))
    assert len(backlog) == 2 and len(receiver.posts) == 2  # each delivery tried its own, once
    receiver.outage(False)
    world.clock.advance(minutes=2)  # past their backoff
    world.actions.fail_with = None

    assert post(client, RETRAIN, {"reason": "now"})[0] == 202
    sent = receiver.posts[-1]  # one post, of this delivery's own notification only: no query for the rest
    assert len(receiver.posts) == 3
    assert set(sent) == set(notifying_ids(world.ledger)) - backlog and len(sent) == 1
    assert sorted(world.reconcile().notified["sent"]) == sorted(backlog)  # the backlog: the reconciler's


def test_notifications_wait_in_the_outbox_while_no_topic_is_configured(ledger_spec: LedgerSpec) -> None:
    world = World(ledger_spec)
    world.manual("retrain")
    report = world.reconcile()
    assert report.notified["sent"] == [] and report.notified["attempts"] == 0
    assert len(world.ledger.pending_notifications(10)) == 1


def test_the_reconciler_sends_a_backlog_in_bounded_batches(ledger_spec: LedgerSpec, receiver: TopicReceiver) -> None:
    world = World(ledger_spec, notifier=notifier_for(receiver))
    world.worker.outbox.batch = 2
    for n in range(5):
        world.actions.fail_with = PermanentError(f"refused {n}")
        world.manual("deploy", version=str(n + 1))
    object.__setattr__(world.worker, "notify_batches", 2)
    first = world.reconcile()
    assert (len(first.notified["sent"]), first.notified["more"]) == (4, True)  # two batches of two this pass
    second = world.reconcile()
    assert (len(second.notified["sent"]), second.notified["more"]) == (1, False)
    assert sorted(receiver.ids()) == notifying_ids(world.ledger)


def test_a_topic_that_does_not_answer_in_time_costs_a_delivery_one_short_attempt(
    ledger_spec: LedgerSpec, receiver: TopicReceiver
) -> None:
    import main
    from function_app.localhost import Host

    quick = {"retry_total": 0, "connection_timeout": 0.5, "read_timeout": 0.5}
    notifier = EventGridNotifier.build(receiver.endpoint, WORKSPACE, FakeCredential(), quick)
    world = World(ledger_spec, notifier=notifier)
    runtime.set_retrainer(world.worker)
    try:
        receiver.stall(5)  # it takes the batch but answers too late: the client gives up after 0.5 s
        started = time.monotonic()
        status, record = post(Client(Host(main.app)), RETRAIN, {"reason": "by hand"})
        elapsed = time.monotonic() - started
    finally:
        runtime.set_retrainer(None)
    assert status == 202 and receiver.attempts == 1
    assert elapsed < 4, f"the delivery waited {elapsed:.1f} s for a topic that answers in 5"
    receiver.stall(0)
    world.clock.advance(minutes=1)  # past its backoff
    assert world.reconcile().notified["sent"] == [notification_id(record["id"], "submitted")]  # not known as sent
    assert set(receiver.ids()) == {notification_id(record["id"], "submitted")}  # at least once, under one id


def test_the_topic_refuses_a_key_and_an_identity_without_the_sender_role_and_nothing_is_lost(
    ledger_spec: LedgerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """infra/ turns the topic's local auth off and gives the app EventGrid Data Sender on it: a key is
    refused, and so is the app's identity without that role (401); the notification waits in the outbox."""
    from azure.core.credentials import AzureKeyCredential

    app = rbac.principal(WORLD, rbac.APP_OID)
    topic = TopicReceiver(principal=app.dropping("EventGrid Data Sender")).start()
    topic.trust(monkeypatch)
    try:
        world = World(ledger_spec, notifier=topic.notifier(WORKSPACE))
        keyed = EventGridNotifier.build(topic.endpoint, WORKSPACE, AzureKeyCredential("a-leaked-key"))
        [record] = world.deliver(drift_event()).decisions
        assert record.outcome == "submitted"
        with pytest.raises(PermanentError):
            keyed.publish(world.ledger.pending_notifications(10))
        assert topic.refused == [401] and topic.accepted == []  # the key: local auth is off
        world.reconcile()  # the app's own identity, without the sender role
        assert topic.refused == [401, 401] and topic.accepted == []
        assert [n.id for n in world.ledger.pending_notifications(10)] == [
            notification_id(record.id, "submitted")
        ]  # kept

        topic.principal = app  # the role is granted (as infra/ does): the reconciler sends it, after its backoff
        world.clock.advance(minutes=1)
        assert world.reconcile().notified["sent"] == [notification_id(record.id, "submitted")]
    finally:
        topic.close()


def test_sending_logs_no_warning_per_notification(
    served: tuple[World, Client], receiver: TopicReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The client's options (one attempt, short timeouts) are given once, when it is built: options
    given to each send made azure-eventgrid log three warnings per notification per send."""
    world, client = served
    for n in range(3):
        world.actions.fail_with = PermanentError(f"refused {n}")
        world.manual("deploy", version=str(n + 1))
    with caplog.at_level(logging.DEBUG, logger="azure"):
        assert len(world.reconcile().notified["sent"]) == 3
        world.actions.fail_with = None
        assert post(client, RETRAIN, {"reason": "by hand"})[0] == 202
    assert len(receiver.ids()) == 4
    noisy = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == []


def test_concurrent_deliveries_send_each_notification_once(
    served: tuple[World, Client], receiver: TopicReceiver
) -> None:
    """40 deliveries at once, each draining the outbox after its decision (small batches, so that
    drains overlap): a notification is claimed by one sender at a time, none is posted twice."""
    import threading

    world, client = served
    world.worker.outbox.batch = 3
    failed_deploys(world, 30)
    start = threading.Barrier(40)
    answers: list[int] = []

    def deliver(k: int) -> None:
        start.wait()
        answers.append(post(client, RETRAIN, {"reason": f"by hand {k}"}, {"Idempotency-Key": f"k{k}"})[0])

    threads = [threading.Thread(target=deliver, args=(k,)) for k in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 40
    world.clock.advance(minutes=2)
    while world.reconcile().notified["more"]:
        pass
    posted = Counter(i for p in receiver.posts for i in p)
    assert sorted(posted) == notifying_ids(world.ledger) and set(posted.values()) == {1}, posted.most_common(3)
    assert Counter(receiver.ids()) == posted
