"""Issue 21, findings 3-5, through the local host (on SQLite; the ledger's binding and a crash on both ledgers): an Idempotency-Key stands for one
request (its route, model and body), bound atomically when the request is claimed, and checked by
every path that answers from a stored record; and each way in (Event Grid, alerts, the HTTP API, the
reconciler) claims in a key space of its own, so a webhook body can never take another's claim."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from function_app import runtime
from function_app.localhost import Host
from function_app.triggers.api import request_digest
from function_app.triggers.callers import FUNCTION_KEY
from handlers.idempotency import bound_request
from handlers.keys import digest
from handlers.plans import run_decision_id
from handlers.signals import EVENT_GRID, MANUAL, RECONCILER_CHANNEL, Trigger, claim_key
from tests.builders import ML, MODEL, event
from tests.conftest import Client
from tests.ledgers import LedgerSpec
from tests.rollouts import Operated
from tests.world import App, MissedRuns

DRY = {"dry_run": True, "reason": "look first"}


def post(client: Any, path: str, body: Any, key: str | None = None) -> tuple[int, Any]:
    status, _, raw = client.host.dispatch(
        "POST", path, {"Idempotency-Key": key} if key else {}, json.dumps(body).encode()
    )
    return status, json.loads(raw) if raw else None


@pytest.fixture
def operated(azure: Any) -> Iterator[Operated]:
    yield Operated(azure)
    runtime.set_retrainer(None)


# --------------------------------------------------------------------------- 3. the operator's routes


@pytest.mark.parametrize("then", ["rollback", "pause"])
def test_a_promotion_s_key_sent_with_a_rollback_or_a_pause_is_a_422_and_nothing_moves(
    operated: Operated, then: str
) -> None:
    status, promoted = operated.call("promote", {"reason": "hotfix"}, key="K-op")
    assert status == 202 and promoted["action"] == "promote"
    traffic, records = operated.traffic(), [r.id for r in operated.azure.ledger.decisions(MODEL, 100)]

    status, refused = operated.call(then, {"reason": "oops"}, key="K-op")

    assert status == 422, refused
    assert "Idempotency-Key 'K-op' was first used at" in refused["error"]
    assert f"/api/models/{MODEL}/promote" in refused["error"] and promoted["id"] in refused["error"]
    assert operated.traffic() == traffic and [r.id for r in operated.azure.ledger.decisions(MODEL, 100)] == records
    status, again = operated.call("promote", {"reason": "hotfix"}, key="K-op")  # the same request: its record
    assert (status, again["id"]) == (202, promoted["id"])


# --------------------------------------------------------------------------- 4. the race


def test_sixteen_requests_racing_with_one_key_and_two_bodies_never_get_the_other_s_record(app: App) -> None:
    bodies = [{"dry_run": True, "reason": "body a"}, {"dry_run": True, "reason": "body b"}]
    digests = [bound_request(request_digest("retrain", MODEL, b), FUNCTION_KEY) for b in bodies]
    rounds = 12 if app.spec.kind == "sqlite" else 6
    answers: list[tuple[int, int, Any]] = []
    lock = threading.Lock()

    def ask(n: int, key: str) -> None:
        status, out = post(app.client, f"/api/models/{MODEL}/retrain", bodies[n % 2], key)
        with lock:
            answers.append((n % 2, status, out))

    with ThreadPoolExecutor(16) as pool:
        for r in range(rounds):
            list(pool.map(lambda n, key=f"race-{r}": ask(n, key), range(16)))

    wrong = [(n, out) for n, status, out in answers if status == 200 and out["trigger"]["request"] != digests[n]]
    assert wrong == []
    assert {status for _, status, _ in answers} <= {200, 422, 503}
    assert sum(status == 422 for _, status, _ in answers) >= rounds  # each key went to one body only
    for r in range(rounds):  # one decision per key: the body that claimed it first
        records = app.ledger.decisions(event_id=f"{MODEL}:race-{r}")
        assert len(records) == 1 and records[0].trigger["request"] in digests


# --------------------------------------------------------------------------- 5. claim namespaces


def test_a_webhook_event_posted_as_topic_http_with_a_manual_key_s_id_does_not_stop_the_request(app: App) -> None:
    forged = event("ManualRequest.retrain", {"reason": "mine"}, event_id=f"{MODEL}:K-taken", topic="http")
    status, _ = app.deliver("/api/events", [forged])
    assert status == 200
    assert app.ledger.event_status(Trigger("http", f"{MODEL}:K-taken", "ManualRequest.retrain"))[0] == "done"  # type: ignore[index]

    status, record = post(app.client, f"/api/models/{MODEL}/retrain", DRY, "K-taken")

    assert status == 200, record
    assert (record["action"], record["outcome"]) == ("retrain", "planned")
    assert record["trigger"]["request"] == bound_request(request_digest("retrain", MODEL, DRY), FUNCTION_KEY)
    status, again = post(app.client, f"/api/models/{MODEL}/retrain", DRY, "K-taken")
    assert (status, again["id"]) == (200, record["id"])


def test_a_webhook_event_shaped_like_the_reconciler_s_catch_does_not_suppress_it(ledger_spec: LedgerSpec) -> None:
    import main

    world = MissedRuns(ledger_spec)
    retrain = world.submit()
    job = world.job_of(retrain)
    world.actions.statuses[job] = "Completed"
    world.actions.run_tags[job] = {"r2_score": "0.61"}
    runtime.set_retrainer(world.worker)
    try:
        client = Client(Host(main.app))
        forged = event(
            "RunCompleted",
            {"runId": job, "experimentName": "x", "runStatus": "Completed"},
            event_id=f"reconciler:{job}:completed",
            topic="reconciler",
        )
        status, _, _ = client.call("POST", "/api/events", [forged], {"aeg-event-type": "Notification"})
        assert status == 200
    finally:
        runtime.set_retrainer(None)
    world.clock.advance(minutes=20)

    report = world.reconcile()

    [deploy] = report.caught
    assert (deploy.id, deploy.action, deploy.outcome) == (run_decision_id(MODEL, job), "deploy", "submitted")
    assert deploy.trigger["event_id"] == f"reconciler:{job}:completed"
    assert "retrain" not in world.flights() and world.flights()["rollout"].decision == deploy.id


def test_each_channel_claims_in_its_own_key_space_and_event_grid_keeps_its_format() -> None:
    grid = Trigger("/subscriptions/x/workspaces/w", "e1", ML + "RunCompleted")
    assert claim_key(grid) == digest(grid.source.lower(), grid.event_type, grid.event_id, length=32)
    same = [Trigger("x", "m:k", "ManualRequest.retrain", channel=c) for c in (EVENT_GRID, MANUAL, RECONCILER_CHANNEL)]
    assert len({claim_key(t) for t in same}) == 3
    retrain = Trigger("http", "m:k", "ManualRequest.retrain", request="a", channel=MANUAL)
    promote = Trigger("http", "m:k", "ManualRequest.promote", request="b", channel="operator")
    assert claim_key(retrain) == claim_key(promote)  # one key, one request, whatever the route


# --------------------------------------------------------------------------- keys claimed before the upgrade


def test_a_key_claimed_before_claim_channels_is_still_found_and_still_bound(app: App) -> None:
    """A request finished by the service before claims had channels (its claim under the digest of
    ``http``, the route and ``model:key``) is retried after the upgrade: the same record again, and
    another body is still a 422; what a webhook event left under such a key is no answer."""
    from function_app.runtime import get_retrainer
    from handlers.signals import ManualRequest

    real = {"reason": "real"}
    before = Trigger(
        "http", f"{MODEL}:K-old", "ManualRequest.retrain", request=request_digest("retrain", MODEL, real)
    )  # no channel: as the API made it before
    first = get_retrainer().service.manual(ManualRequest(before, MODEL, "retrain", "real"))
    assert first.outcome in ("planned", "submitted")

    status, refused = post(app.client, f"/api/models/{MODEL}/retrain", {"reason": "other"}, "K-old")
    assert status == 422 and first.id in refused["error"]
    status, again = post(app.client, f"/api/models/{MODEL}/retrain", real, "K-old")
    assert (status, again["id"], again["outcome"]) == (
        200 if first.outcome == "planned" else 202,
        first.id,
        first.outcome,
    )
    assert [r.id for r in app.ledger.decisions(MODEL)] == [first.id]


def test_a_key_bound_before_keys_were_bound_to_callers_still_answers_its_own_retry(app: App) -> None:
    """A request claimed with the digest of its route, model and body alone (no caller part, as before
    keys were bound to callers) is retried after the upgrade: its record again; another body is a 422."""
    from function_app.runtime import get_retrainer
    from handlers.signals import ManualRequest

    real = {"reason": "real", "dry_run": True}
    before = Trigger(
        "http", f"{MODEL}:K-unbound", "ManualRequest.retrain", request=request_digest("retrain", MODEL, real)
    )
    first = get_retrainer().service.manual(ManualRequest(replace(before, channel=MANUAL), MODEL, "retrain", "real"))

    status, again = post(app.client, f"/api/models/{MODEL}/retrain", real, "K-unbound")
    assert (status, again["id"]) == (200, first.id)
    status, refused = post(app.client, f"/api/models/{MODEL}/retrain", {"reason": "other"}, "K-unbound")
    assert status == 422 and first.id in refused["error"]
    assert [r.id for r in app.ledger.decisions(MODEL)] == [first.id]


@pytest.mark.both_ledgers
def test_a_key_bound_before_keys_were_bound_to_callers_left_mid_request_is_taken_over_once_its_lease_ran_out(
    app: App,
) -> None:
    """A worker of the version before died while carrying out a request (its claim ``processing``, bound to the
    digest of the route, model and body alone): the client's retry with its key is asked again later (503) while the
    claim's lease runs, then carried out, as a claim of this version is; another body is still a 422."""
    from datetime import UTC, datetime, timedelta

    real, lease = {"reason": "real", "dry_run": True}, timedelta(seconds=60)
    now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # the app's clock (tests.fakes.Clock)
    for key, claimed in (("K-running", now - timedelta(seconds=30)), ("K-died", now - timedelta(minutes=10))):
        digest_of = request_digest("retrain", MODEL, real)
        old = Trigger("http", f"{MODEL}:{key}", "ManualRequest.retrain", request=digest_of, channel=MANUAL)
        assert app.ledger.claim_event(old, claimed, lease).status == "new"  # and never finished

    status, busy = post(app.client, f"/api/models/{MODEL}/retrain", real, "K-running")
    assert status == 503 and "being processed" in busy["error"], busy
    status, done = post(app.client, f"/api/models/{MODEL}/retrain", real, "K-died")
    assert status == 200 and done["outcome"] == "planned", done
    status, again = post(app.client, f"/api/models/{MODEL}/retrain", real, "K-died")
    assert (status, again["id"]) == (200, done["id"])
    status, refused = post(app.client, f"/api/models/{MODEL}/retrain", {"reason": "other"}, "K-died")
    assert status == 422 and done["id"] in refused["error"], refused


@pytest.mark.both_ledgers
def test_each_ledger_binds_a_key_to_its_request_in_the_claim(ledger_spec: LedgerSpec) -> None:
    """The ledger contract under the routes above: the claim that creates a key's row binds it; a claim
    with another request is ``reused`` (when and for what), never taken over, whatever its state."""
    from datetime import UTC, datetime, timedelta

    ledger = ledger_spec.open()
    now, lease = datetime(2026, 12, 1, tzinfo=UTC), timedelta(seconds=60)
    promote = Trigger("http", f"{MODEL}:K", "ManualRequest.promote", request="aaa", channel="operator")
    pause = Trigger("http", f"{MODEL}:K", "ManualRequest.pause", request="bbb", channel="operator")
    assert ledger.claim_event(promote, now, lease).status == "new"
    reused = ledger.claim_event(pause, now + lease * 2, lease)  # the first claim's lease ran out: still not taken
    assert (reused.status, reused.first_for, reused.request) == ("reused", "ManualRequest.promote", "aaa")
    assert reused.first_used.startswith("2026-12-01T00:00:00")
    assert ledger.claim_event(promote, now + lease * 2, lease).status == "retry"
    ledger.finish_event(promote, ["op-1"], now)
    assert ledger.claim_event(pause, now, lease).decisions == ("op-1",)
    assert ledger.claim_event(promote, now, lease).status == "done"


@pytest.mark.both_ledgers
def test_a_promotion_finished_by_the_reconciler_answers_its_own_retry_but_a_pause_with_its_key_is_a_422(
    operated: Operated,
) -> None:
    """The issue's path: the promotion's worker died after setting traffic, a reconciler pass finished
    it, so its claim was never marked done; the lookup that finds its record checks the key's binding."""
    from handlers.signals import OPERATOR, OperatorRequest
    from tests.crashes import DiesAfterSettingTraffic, WorkerDied

    azure, body = operated.azure, {"reason": "hotfix"}
    trigger = Trigger(
        "http",
        f"{MODEL}:K-dies",
        "ManualRequest.promote",
        caller=(("kind", "function key"),),
        request=bound_request(request_digest("promote", MODEL, body), FUNCTION_KEY),
        channel=OPERATOR,
    )  # what the route makes of POST .../promote with Idempotency-Key K-dies
    with pytest.raises(WorkerDied):
        azure.new_worker(actions=DiesAfterSettingTraffic(azure.actions)).operator.handle(
            OperatorRequest(trigger, MODEL, "promote", "hotfix")
        )
    assert operated.state() == "promoted"
    [promote] = operated.records("promote")
    traffic = operated.traffic()

    status, refused = operated.call("pause", {"reason": "hold on"}, key="K-dies")
    assert status == 422, refused
    assert f"/api/models/{MODEL}/promote" in refused["error"]
    status, rollback = operated.call("rollback", {"reason": "undo"}, key="K-dies")
    assert status == 422, rollback
    assert operated.traffic() == traffic and operated.records("rollback") == []
    status, again = operated.call("promote", body, key="K-dies")
    assert (status, again["id"]) == (202, promote.id)


# --------------------------------------------------------------------------- a race between two routes


def test_a_request_racing_another_route_under_its_key_is_never_answered_with_the_other_s_record(
    tmp_path: Any,
) -> None:
    """A pause and a retrain sent at once with one key: the pause looks for its earlier answer while
    the retrain claims the key and finishes in between. The pause is refused (422) or not answered
    yet; never answered with the retrain's record (once seen under load in tests/test_fuzz.py: the
    binding was checked on one read and the answer taken from a later one)."""
    from datetime import UTC, datetime, timedelta

    from function_app.adapters.sqlite_ledger import SqliteLedger
    from handlers.claims import Claims
    from handlers.errors import KeyReused
    from handlers.records import DecisionRecord
    from handlers.signals import OPERATOR

    ledger = SqliteLedger(str(tmp_path / "ledger.db"))
    now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    key = f"{MODEL}:K-race"
    retrain = Trigger(
        "http", key, "ManualRequest.retrain", request=request_digest("retrain", MODEL, DRY), channel=MANUAL
    )
    pause = Trigger("http", key, "ManualRequest.pause", request=request_digest("pause", MODEL, DRY), channel=OPERATOR)

    class Interleaved:
        """The ledger, with the retrain claiming the key and finishing right after the pause's first read."""

        def __init__(self) -> None:
            self.reads = 0

        def __getattr__(self, name: str) -> Any:
            method = getattr(ledger, name)
            if name not in ("event_claim", "event_status"):
                return method

            def read(*args: Any, **kwargs: Any) -> Any:
                out = method(*args, **kwargs)
                self.reads += 1
                if self.reads == 1:
                    assert ledger.claim_event(retrain, now, timedelta(seconds=60)).status == "new"
                    record = DecisionRecord(
                        "re-race", MODEL, "retrain", "dry_run", "look first", retrain.as_dict(), now.isoformat()
                    )
                    ledger.put_decision(record)
                    ledger.finish_event(retrain, [record.id], now)
                return out

            return read

    interleaved = Interleaved()
    with pytest.raises(KeyReused, match="/retrain"):  # the key is the retrain's now: a 422, not its record
        Claims(interleaved).answered(pause)  # type: ignore[arg-type]
    assert interleaved.reads >= 2  # the retrain came in between the pause's reads
