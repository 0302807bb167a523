"""Notifications as CloudEvents: the app's own triggers, served by the local host's dispatcher, on
each ledger, publish through the real EventGridPublisherClient to a local topic receiver.

What is shown: every decision that notifies is published once, under an id derived from the decision
and its outcome; an outage of the topic delays notifications (the reconciler sends them later) and
loses none; a delivery makes at most one attempt at the topic, and is answered whatever the topic does.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from function_app import runtime
from function_app.adapters.notifier import EventGridNotifier
from handlers.errors import PermanentError
from handlers.notify import notification_id, notification_of
from handlers.ports import Ledger
from tests import rbac
from tests.builders import WORKSPACE, drift_event
from tests.conftest import Client, retrain_cli
from tests.fake_http import FakeCredential
from tests.ledgers import LedgerSpec
from tests.topic_receiver import WORLD, TopicReceiver
from tests.world import MODEL, World

pytestmark = pytest.mark.both_ledgers  # the outbox is in the ledger: its claims, leases and dead letters on each

RETRAIN = f"/api/models/{MODEL}/retrain"
DEPLOY = f"/api/models/{MODEL}/deploy"
EVENTS = "/runtime/webhooks/eventgrid?functionName=on_workspace_event"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[TopicReceiver]:
    """The notification topic as infra/ creates it (Entra ID only), the app's identity with its roles."""
    topic = TopicReceiver().start()
    topic.trust(monkeypatch)
    yield topic
    topic.close()


def notifier_for(receiver: TopicReceiver) -> EventGridNotifier:
    notifier: EventGridNotifier = receiver.notifier(WORKSPACE)
    return notifier


@pytest.fixture
def served(ledger_spec: LedgerSpec, receiver: TopicReceiver) -> Iterator[tuple[World, Client]]:
    """A worker that notifies the receiver, installed as the app's service, and the app's HTTP functions."""
    import main
    from function_app.localhost import Host

    world = World(ledger_spec, notifier=notifier_for(receiver))
    runtime.set_retrainer(world.worker)
    yield world, Client(Host(main.app))
    runtime.set_retrainer(None)


def notifying_ids(ledger: Ledger) -> list[str]:
    """The notification ids of every decision in the ledger that notifies."""
    notes = [notification_of(r) for r in ledger.decisions(limit=1000)]
    return sorted(n.id for n in notes if n is not None)


def post(client: Client, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, _, out = client.call("POST", path, body, headers)
    return status, out


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


def failed_deploys(world: World, n: int) -> list[str]:
    """``n`` failed deploys (each notifies), left pending in the outbox; their notification ids."""
    ids = []
    for k in range(n):
        world.actions.fail_with = PermanentError(f"deployment refused: quota {k}")
        record = world.manual("deploy", version=str(k + 1))
        ids.append(notification_id(record.id, "failed"))
    world.actions.fail_with = None
    return ids


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
