"""DESIGN guarantee 4: every event gets an answer. Once an event is claimed, anything but a transient
failure ends in a recorded decision and a finished event, acknowledged with 2xx, and a redelivery is
a duplicate; a batch is answered event by event; values too large for a ledger are cut, not a 500;
a body nested too deep is a 400 before anything is claimed. On SQLite (the crash points and the
values too large for a record on both ledgers), through the webhook route and through the Event Grid trigger's own delivery path."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from handlers import guards
from handlers.errors import PermanentError, TransientError
from handlers.records import MAX_TEXT, DecisionRecord
from handlers.retrainer import Retrainer
from handlers.signals import Trigger
from handlers.wiring import assemble
from tests.builders import WORKSPACE, breach_event, drift_event, ours, run_event
from tests.crashes import DiesAfterActing, DiesBeforeActing, FinishFailsOnce, LedgerThatDies, WorkerDied
from tests.ledgers import LedgerSpec
from tests.world import DRIFT, MODEL, App, World

TRIGGER_PATH = "/runtime/webhooks/eventgrid?functionName=on_workspace_event"


def numeric_dataset_drift(event_id: str) -> dict[str, Any]:
    raw = drift_event(event_id=event_id)
    raw["data"]["TargetDatasetId"] = 4242  # the policy takes training_data from it: a string is required
    return raw


@pytest.mark.parametrize("path", ["/api/events", TRIGGER_PATH])
def test_an_event_that_cannot_be_acted_on_after_its_claim_is_recorded_once_and_a_redelivery_is_a_duplicate(
    app: App, path: str
) -> None:
    raw = numeric_dataset_drift("bad-data-1")
    status, body = app.deliver(path, [raw])
    assert status == 200
    [rec] = app.decisions_of("bad-data-1")
    assert (rec.model, rec.outcome) == (MODEL, "skipped")
    assert "input 'training_data' is of type mltable" in rec.reason and "gave int '4242'" in rec.reason

    again_status, again = app.deliver(path, [raw])
    assert again_status == 200
    assert app.decisions_of("bad-data-1") == [rec]  # recorded once
    if path == "/api/events":
        assert [r["status"] for r in body["results"]] == ["processed"]
        assert [r["status"] for r in again["results"]] == ["duplicate"]
        assert again["results"][0]["decisions"] == [rec.to_dict()]
    assert app.ledger.decisions(MODEL) == [rec]


def test_a_batch_with_bad_events_in_the_middle_acts_on_the_others_and_answers_per_event(app: App) -> None:
    batch = [
        drift_event(event_id="good-1"),
        {"eventType": DRIFT, "data": {}},  # no id: it cannot even be claimed
        numeric_dataset_drift("bad-2"),
        breach_event(event_id="good-3"),
    ]
    status, body = app.deliver("/api/events", batch)
    assert status == 200
    results = body["results"]
    assert [r["status"] for r in results] == ["processed", "rejected", "processed", "processed"]
    assert results[1] == {"index": 1, "status": "rejected", "error": results[1]["error"]}
    assert "event is missing 'id'" in results[1]["error"]
    assert [d["outcome"] for d in results[0]["decisions"]] == ["planned"]
    assert [d["outcome"] for d in results[2]["decisions"]] == ["skipped"]
    assert [(d["model"], d["outcome"]) for d in results[3]["decisions"]] == [("churn-classifier", "planned")]


def test_a_body_in_which_no_event_can_be_read_is_a_400_saying_why(app: App) -> None:
    status, body = app.deliver("/api/events", [{"eventType": DRIFT}, 7])
    assert status == 400
    assert body["problems"][0].startswith("event is missing 'id'") and "must be a JSON object" in body["problems"][1]


@pytest.mark.both_ledgers
def test_values_too_large_for_a_ledger_are_recorded_cut_with_their_length_and_digest(app: App) -> None:
    long_id = "e" * 40_000
    huge_monitor = "m" * 1_000_000
    status, body = app.deliver(
        "/api/events", [drift_event(event_id=long_id), drift_event(monitor=huge_monitor, event_id="huge-monitor")]
    )
    assert status == 200, body
    [by_id], [by_monitor] = app.decisions_of(long_id), app.decisions_of("huge-monitor")
    assert by_id.outcome == "planned" and len(by_id.trigger["event_id"]) == MAX_TEXT
    assert "[cut: 40000 characters, sha256 " in by_id.trigger["event_id"]
    assert by_monitor.outcome == "skipped" and "no model in the policy listens to drift monitor" in by_monitor.reason
    assert "[cut: " in by_monitor.reason and len(by_monitor.reason) < 10_000

    again_status, again = app.deliver("/api/events", [drift_event(event_id=long_id)])
    assert again_status == 200 and again["results"][0]["status"] == "duplicate"


@pytest.mark.both_ledgers
def test_a_candidate_run_with_a_megabyte_of_tags_is_recorded_and_frees_its_slot(app: App) -> None:
    tags = {**ours(), "r2_score": "0.61", "notes": "x" * 1_000_000}
    raw = run_event(run_id="retrain-big-1", tags=tags, event_id="big-run")
    status, body = app.deliver("/api/events", [raw])
    assert status == 200, body
    [rec] = app.decisions_of("big-run", "Microsoft.MachineLearningServices.RunCompleted")
    assert (rec.action, rec.outcome) == ("deploy", "planned")
    assert "[cut: 1000000 characters" in rec.details["rendered"]["candidate"]["run_tags"]["notes"]
    assert app.ledger.get_model(MODEL).flights == {}  # nothing left reserved


ROUTES = [
    ("/api/events", {"aeg-event-type": "Notification"}),
    ("/api/alerts", {}),
    (f"/api/models/{MODEL}/retrain", {}),
    (f"/api/models/{MODEL}/deploy", {}),
    (TRIGGER_PATH, {"aeg-event-type": "Notification"}),
]


@pytest.mark.parametrize(("path", "headers"), ROUTES)
def test_json_nested_too_deep_is_a_400_with_a_json_error_and_nothing_is_claimed(
    app: App, path: str, headers: dict[str, str]
) -> None:
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 65 + b"1" + b"}" * 65):
        status, out = app.post(path, body, headers)
        assert status == 400, out
        assert "nested deeper than 64 levels" in out["error"]
    assert app.ledger.decisions() == []


@pytest.mark.parametrize(("path", "headers"), ROUTES)
def test_a_body_over_the_size_limit_is_a_400_before_anything_is_claimed(
    app: App, path: str, headers: dict[str, str]
) -> None:
    status, out = app.post(path, b'["' + b"x" * (4 * 1024 * 1024) + b'"]', headers)
    assert status == 400 and "is larger than 4194304 bytes" in out["error"]
    assert app.ledger.decisions() == []


# --------------------------------------------------------------------------- the service's own failure path


class LedgerThatRefuses:
    """A ledger that refuses, for good, to change one model's state (as Table storage refuses an
    entity it cannot store): everything else goes to the real ledger."""

    def __init__(self, inner: Any, model: str) -> None:
        self.inner = inner
        self.model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def update_model(self, model: str, change: Any) -> Any:
        if model == self.model:
            raise PermanentError(f"writing model {model}: the service answered 400: EntityTooLarge")
        return self.inner.update_model(model, change)

    def reserve(self, model: str, change: Any, record_of: Any) -> Any:
        if model == self.model:  # the slot and its record are one write of the model's partition
            raise PermanentError(f"writing model {model}: the service answered 400: EntityTooLarge")
        return self.inner.reserve(model, change, record_of)


def test_a_permanent_failure_after_the_claim_is_a_recorded_failed_decision_and_the_event_is_done(
    ledger_spec: LedgerSpec,
) -> None:
    world = World(ledger_spec)
    refusing = world.new_worker(ledger=LedgerThatRefuses(ledger_spec.open(), MODEL))

    [rec] = world.deliver(drift_event(event_id="refused"), refusing).decisions

    assert (rec.model, rec.action, rec.outcome) == (MODEL, "none", "failed")
    assert (
        rec.reason
        == "the event could not be handled: writing model sklearn_regression_model: the service answered 400: EntityTooLarge"
    )
    assert world.ledger.event_status(Trigger(WORKSPACE, "refused", DRIFT)) == ("done", [rec.id])
    again = world.deliver(drift_event(event_id="refused"))
    assert again.status == "duplicate" and again.decisions == [rec]
    assert world.actions.submissions == []


def test_a_bug_after_the_claim_gives_the_claim_back_so_the_redelivery_is_not_refused_as_busy(
    tmp_path: Path,
) -> None:
    world = World(LedgerSpec("sqlite", str(tmp_path / "l.db")))

    class Broken(LedgerThatRefuses):
        def update_model(self, model: str, change: Any) -> Any:
            raise RuntimeError("a bug")

        def reserve(self, model: str, change: Any, record_of: Any) -> Any:
            raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        world.deliver(drift_event(event_id="bug"), world.new_worker(ledger=Broken(world.spec.open(), MODEL)))
    assert world.ledger.event_status(Trigger(WORKSPACE, "bug", DRIFT)) is not None
    [rec] = world.deliver(drift_event(event_id="bug")).decisions  # at once, not after the lease
    assert rec.outcome == "submitted"


def test_strict_json_replies_carry_no_nan_or_infinity(app: App) -> None:
    status, _, raw = app.client.host.dispatch("GET", "/api/decisions", {}, b"")
    assert status == 200
    json.loads(raw, parse_constant=lambda name: pytest.fail(f"reply holds {name}"))


# --------------------------------------------------------------------------- a recorded outcome stands

POINTS = ["after-reserve", "after-act", "after-outcome", "after-confirm"]


def install_worker(point: str | None = None) -> Retrainer:
    """The local host's worker from now on: the app's own (``point`` None), or one on the same
    settings, ledger and clock whose ports make it die at ``point`` (tests/crashes.py)."""
    from function_app import runtime
    from function_app.settings import Settings

    settings = Settings.from_env()
    base = runtime.build(settings, clock=runtime.get_retrainer().clock)
    if point is None:
        runtime.set_retrainer(base)
        return base
    actions: Any = base.jobs
    ledger: Any = base.ledger
    if point == "after-reserve":
        actions = DiesBeforeActing(actions)
    elif point == "after-act":
        actions = DiesAfterActing(actions)
    else:
        ledger = LedgerThatDies(ledger, point.removeprefix("after-"))
    dying = assemble(base.policy, ledger, actions, actions, base.clock, [settings.workspace_id])
    runtime.set_retrainer(dying)
    return dying


def cli_why(event_id: str, capsys: pytest.CaptureFixture[str]) -> str:
    """What `retrain why EVENT_ID` prints, on the ledger the app's settings configure."""
    from function_app.cli import main as cli

    capsys.readouterr()
    assert cli(["why", event_id]) == 0
    return capsys.readouterr().out


def freed_after_a_crash(app: App, point: str, send: Callable[[], Any]) -> DecisionRecord:
    """``send`` reaches a worker that dies at ``point``; the lease runs out and the reconciler carries
    the reservation out (the dry run plans at once, which frees the model's slot; its cooldown
    stands). The record that stands."""
    install_worker(point)
    with pytest.raises(WorkerDied):
        send()
    healthy = install_worker()
    healthy.clock.advance(seconds=61)  # type: ignore[attr-defined]
    healthy.reconcile()
    [rec] = app.ledger.decisions(MODEL)
    assert (rec.action, rec.outcome) == ("retrain", "planned")
    state = app.ledger.get_model(MODEL)
    assert state.flights == {} and state.last_retrain_at is not None  # free, in its cooldown
    return rec


@pytest.mark.both_ledgers
@pytest.mark.parametrize("path", ["/api/events", TRIGGER_PATH])
@pytest.mark.parametrize("point", POINTS)
def test_a_redelivery_after_the_slot_was_freed_answers_with_the_decision_recorded_and_rewrites_nothing(
    app: App, path: str, point: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21, finding 2: the redelivery found the model in cooldown and wrote ``skipped: model is
    in cooldown`` over the decision that had planned the retrain; `retrain why` then said it had not."""
    raw = drift_event(event_id="crashed-1")
    rec = freed_after_a_crash(app, point, lambda: app.deliver(path, [raw]))

    status, body = app.deliver(path, [raw])

    assert status == 200
    assert app.decisions_of("crashed-1") == [rec] and app.ledger.decisions(MODEL) == [rec]
    if path == "/api/events":
        assert body["results"][0]["decisions"] == [rec.to_dict()]
    out = cli_why("crashed-1", capsys)
    assert f"retrain planned  model={MODEL}  id={rec.id}" in out and "cooldown" not in out
    again_status, again = app.deliver("/api/events", [raw])  # finished now: a duplicate
    assert again_status == 200 and again["results"][0]["status"] == "duplicate"
    assert again["results"][0]["decisions"] == [rec.to_dict()]


@pytest.mark.both_ledgers
@pytest.mark.parametrize("point", POINTS)
def test_a_manual_request_retried_with_its_key_after_the_slot_was_freed_gets_its_record_not_a_409(
    app: App, point: str
) -> None:
    route, key = f"/api/models/{MODEL}/retrain", {"Idempotency-Key": "nightly-1"}
    rec = freed_after_a_crash(app, point, lambda: app.post(route, {"reason": "nightly"}, key))

    status, body = app.post(route, {"reason": "nightly"}, key)

    assert (status, body) == (200, rec.to_dict())
    assert app.ledger.decisions(MODEL) == [rec]
    assert app.post(route, {"reason": "another"}, {"Idempotency-Key": "nightly-2"})[0] == 409  # the cooldown holds


def test_a_run_s_deploy_refused_by_a_guard_is_still_carried_out_from_a_later_event_about_the_run(
    ledger_spec: LedgerSpec,
) -> None:
    """What may replace a final record: a guard's refusal gives way to the executor's reservation. A
    run's deploy decision (keyed by the run) met another rollout in flight; once that one is over,
    the next event about the same run judges the candidate after all, under the same id."""
    world = World(ledger_spec)
    world.ledger.update_model(
        MODEL, lambda s: guards.reserve(s, guards.ROLLOUT, "de-another", world.clock(), None, None)
    )
    run = {"run_id": "run-9", "tags": {**ours(MODEL), "r2_score": "0.61"}}
    [refused] = world.deliver(run_event(**run, event_id="completed")).decisions
    assert (refused.action, refused.outcome, refused.details["guard"]) == ("deploy", "skipped", "in_flight")
    world.ledger.update_model(MODEL, lambda s: guards.release(s, guards.ROLLOUT, "de-another", None))
    world.clock.advance(minutes=5)

    [deploy] = world.deliver(run_event(**run, event_id="completed-via-another-subscription")).decisions

    assert (deploy.id, deploy.action, deploy.outcome) == (refused.id, "deploy", "submitted")
    assert world.ledger.get_decision(refused.id) == deploy and len(world.actions.deployments) == 1
    assert world.ledger.get_model(MODEL).flights[guards.ROLLOUT].decision == deploy.id


class TickingClock:
    """A clock that moves ``tick`` on every reading: work takes time, deterministically (no waiting)."""

    def __init__(self, tick: timedelta) -> None:
        self.now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
        self.tick = tick

    def __call__(self) -> datetime:
        self.now += self.tick
        return self.now


def test_a_batch_answers_within_its_deadline_and_the_redelivery_goes_on_from_what_was_done(app: App) -> None:
    """Event Grid waits 30 s whatever the batch's size: past 80% of RETRAIN_DEADLINE_SECONDS the events not
    reached are deferred with a 503, and each redelivery finds what was done and gets further."""
    from function_app import runtime
    from function_app.settings import Settings

    runtime.set_retrainer(runtime.build(Settings.from_env(), clock=TickingClock(timedelta(seconds=1))))
    batch = [drift_event(event_id=f"big-{i}", monitor=f"monitor-{i % 3}") for i in range(24)]
    deliveries, handled_before = [], 0
    while True:
        status, body = app.deliver("/api/events", batch)
        deliveries.append(status)
        assert [r["event_id"] for r in body["results"]] == [e["id"] for e in batch]  # every event answered
        statuses = [r["status"] for r in body["results"]]
        if status == 200:
            break
        assert status == 503 and "were not reached within the 20 s" in body["error"]
        handled = statuses.index("deferred")
        assert set(statuses[handled:]) == {"deferred"} and handled > handled_before  # each delivery gets on
        assert set(statuses[:handled_before]) <= {"duplicate"}
        handled_before = handled
        assert len(deliveries) < len(batch)
    assert len(deliveries) > 2 and set(statuses) <= {"processed", "duplicate"}
    for event in batch:  # each event decided once, whichever delivery reached it
        assert len(app.decisions_of(event["id"])) == 1


@pytest.mark.both_ledgers
def test_the_redelivery_of_a_run_s_deploy_refused_by_a_guard_judges_it_again_once_the_slot_is_free(
    ledger_spec: LedgerSpec,
) -> None:
    """The event's own redelivery (its records were written, marking it done failed: the Table
    ledger's order) is another chance for a refusal by a guard, as a later event about the run is;
    a final outcome it would not replace."""

    class DoneFails(FinishFailsOnce):
        def finish_event(self, trigger: Trigger, ids: Any, now: Any, records: Any = ()) -> list[Any]:
            for record in records:  # the records first, as the Table ledger writes them
                self.inner.put_decision(record)
            return super().finish_event(trigger, ids, now, records)

    world = World(ledger_spec)
    world.ledger.update_model(
        MODEL, lambda s: guards.reserve(s, guards.ROLLOUT, "de-another", world.clock(), None, None)
    )
    raw = run_event(run_id="run-9", tags={**ours(MODEL), "r2_score": "0.61"}, event_id="completed")
    with pytest.raises(TransientError):
        world.deliver(raw, world.new_worker(ledger=DoneFails(ledger_spec.open())))
    [refused] = world.ledger.decisions(MODEL)
    assert (refused.action, refused.outcome, refused.details["guard"]) == ("deploy", "skipped", "in_flight")
    world.ledger.update_model(MODEL, lambda s: guards.release(s, guards.ROLLOUT, "de-another", None))

    [deploy] = world.deliver(raw).decisions

    assert (deploy.id, deploy.outcome) == (refused.id, "submitted") and len(world.actions.deployments) == 1
    assert world.ledger.get_decision(deploy.id) == deploy
