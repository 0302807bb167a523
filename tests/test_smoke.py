"""The smoke test before any traffic (``deploy.rollout.smoke``), end to end: a candidate that passed the
gate is deployed through the real Azure ML SDK against the fake ARM, provisioned, and then invoked by
deployment name through the endpoint's scoring URI (tests/fake_scoring.py), as the service's identity
with the roles infra/ gives it. A failure is a ``rollback`` before the traffic changes: the ARM's
traffic history shows the candidate never got any.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from handlers import guards
from handlers.records import from_iso
from tests.azure_world import ENDPOINT, MODEL
from tests.crashes import WorkerDied
from tests.fake_scoring import SCORE, answers, healthy, model_fails
from tests.ledgers import LedgerSpec
from tests.smoke_world import (
    SAMPLES,
    SCHEMA,
    DiesAtLoadRecord,
    DiesAtSmokeRecord,
    DiesAtStepRecord,
    json_dump,
    json_free_of,
    smoke_worlds,
)


@pytest.fixture
def world(tmp_path: Path, ledger_spec: LedgerSpec, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from smoke_worlds(tmp_path, ledger_spec, monkeypatch)


def test_a_healthy_candidate_passes_its_smoke_test_then_gets_its_first_step(world: Any) -> None:
    smoke = world(response_schema=SCHEMA, champion={"field": "predictions", "abs_tolerance": 0.01})
    azure, cand = smoke.azure, smoke.name

    assert smoke.state() == "smoke_passed"
    assert azure.arm.traffic_puts == []  # the smoke test changed no traffic
    assert azure.arm.scoring.to(cand) == SAMPLES and azure.arm.scoring.to("blue") == SAMPLES
    [passed] = smoke.records("rollout")
    assert passed.outcome == "submitted" and passed.id.startswith("sm-")
    details = passed.details["smoke"]
    assert (details["candidate"], details["champion"], details["requests"], details["failed"]) == (cand, "blue", 2, [])
    assert [a["status"] for a in details["answers"]] == [200, 200]
    assert "smoke test passed: 2 request(s) answered with status 200, the response schema" in passed.reason
    assert "within tolerance of blue's answers" in passed.reason
    assert json_free_of(passed.details, "data")  # no request or answer body is recorded

    [view] = [m for m in azure.new_worker().models() if m["model"] == MODEL]  # GET /api/models
    assert view["in_flight"]["rollout"]["smoked"] == passed.id
    assert smoke.state() == "stepped"  # and the rollout goes on
    assert azure.arm.traffic_puts == [{"blue": 90, cand: 10}]
    assert smoke.state() == "baking"
    assert len(azure.arm.scoring.to(cand)) == 2  # the smoke test ran once


def test_the_smoke_test_comes_before_the_shadow_stage(world: Any) -> None:
    smoke = world(mirror={"percent": 10, "bake": "10m"})
    azure, cand = smoke.azure, smoke.name

    assert smoke.state() == "smoke_passed"
    assert azure.arm.requests_to("PUT", "^onlineEndpoints/[^/]+$") == []  # the endpoint is not touched
    assert smoke.state() == "mirroring"  # then mirrored traffic, none live
    assert smoke.traffic() == {"blue": 100}
    assert azure.arm.endpoints[ENDPOINT]["properties"]["mirrorTraffic"] == {cand: 10}


def test_a_failed_smoke_test_never_reaches_the_shadow_stage(world: Any) -> None:
    smoke = world(mirror={"percent": 10, "bake": "10m"})
    smoke.azure.arm.scoring.answer_with(ENDPOINT, smoke.name, model_fails(503))

    assert smoke.state() == "smoke_failed"
    assert smoke.azure.arm.requests_to("PUT", "^onlineEndpoints/[^/]+$") == []  # no traffic, no mirror
    assert not (smoke.azure.arm.endpoints[ENDPOINT]["properties"].get("mirrorTraffic") or {})


def test_a_candidate_whose_scoring_fails_never_gets_traffic(world: Any) -> None:
    smoke = world()
    azure, cand = smoke.azure, smoke.name
    azure.arm.scoring.answer_with(ENDPOINT, cand, model_fails(500))

    assert smoke.state() == "smoke_failed"

    assert azure.arm.traffic_puts == []  # never any traffic: the ARM saw no traffic update at all
    assert smoke.traffic() == {"blue": 100}
    assert not smoke.in_flight()  # the slot is free
    [rollback] = smoke.records("rollback")
    assert rollback.id.startswith("sf-") and rollback.outcome == "submitted"
    assert rollback.details["traffic"] is None
    assert rollback.reason == (
        f"rollout of {ENDPOINT}/{cand} rolled back before any traffic: smoke test failed: 2 of 2 request(s); "
        "request 0: status 424 (the model answered 500), expected 200; the live deployment blue answered them, so "
        "the failure is the candidate's (request 0: candidate status 424 (model 500), blue status 200; request 1: "
        "candidate status 424 (model 500), blue status 200); the candidate keeps 0% and the endpoint's traffic was "
        "never changed"
    )
    assert azure.arm.scoring.to("blue") == SAMPLES  # a model's 5xx may be an outage: the live deployment was asked
    assert rollback.details["smoke"]["failed"] == [0, 1]
    assert smoke.records("rollout") == []
    assert azure.new_worker().reconcile().rollouts == []  # nothing in flight any more
    assert (ENDPOINT, cand) in azure.arm.deployments  # kept at 0% until it is retired, like any rolled-back one


def test_an_answer_of_the_wrong_shape_fails_the_schema_and_is_rolled_back(world: Any) -> None:
    smoke = world(response_schema=SCHEMA)
    azure, cand = smoke.azure, smoke.name
    azure.arm.scoring.answer_with(ENDPOINT, cand, answers({"predictions": ["high"]}))

    assert smoke.state() == "smoke_failed"

    assert azure.arm.traffic_puts == []
    [rollback] = smoke.records("rollback")
    problem = rollback.details["smoke"]["answers"][0]["problem"]
    assert problem == 'the answer fails the response schema at /predictions/0: type "number"'
    assert "high" not in json_dump(rollback.details)  # the answer's values are not recorded


def test_answers_too_far_from_the_champion_s_roll_the_candidate_back(world: Any) -> None:
    smoke = world(champion={"field": "predictions", "abs_tolerance": 0.5, "rel_tolerance": 0.01})
    azure, cand = smoke.azure, smoke.name
    azure.arm.scoring.answer_with(ENDPOINT, cand, healthy(scale=1.1))  # 200s, silently 10% off

    assert smoke.state() == "smoke_failed"

    assert azure.arm.traffic_puts == []
    [rollback] = smoke.records("rollback")
    assert rollback.details["smoke"]["answers"][0]["problem"] == (
        "differs from the champion's at /predictions/0: 6.6 vs 6 (difference 0.6; tolerance 0.5 absolute, "
        "0.01 relative)"
    )
    assert rollback.details["smoke"]["tolerance"] == {"field": "predictions", "abs": 0.5, "rel": 0.01}


def test_within_the_tolerance_the_candidate_passes(world: Any) -> None:
    smoke = world(champion={"field": "predictions", "rel_tolerance": 0.2})
    smoke.azure.arm.scoring.answer_with(ENDPOINT, smoke.name, healthy(scale=1.1))
    assert smoke.state() == "smoke_passed"


def test_an_endpoint_with_key_auth_cannot_be_smoke_tested_and_the_rollback_says_how_to_fix_it(world: Any) -> None:
    smoke = world(aad=False)

    assert smoke.state() == "smoke_failed"

    assert smoke.azure.arm.traffic_puts == [] and smoke.azure.arm.scoring.calls == []
    [rollback] = smoke.records("rollback")
    assert "authenticates callers with key" in rollback.reason
    assert "set the endpoint's auth_mode to aad_token, or remove deploy.rollout.smoke" in rollback.reason


def test_without_the_scoring_action_the_smoke_test_defers_and_names_the_action(world: Any) -> None:
    smoke = world()
    azure = smoke.azure
    azure.arm.principal = azure.arm.principal.without(SCORE)

    report = azure.new_worker().reconcile()

    assert report.rollouts == [] and len(report.deferred) == 1
    assert SCORE in report.deferred[0]["error"] and "401" in report.deferred[0]["error"]
    assert azure.arm.traffic_puts == [] and smoke.records("rollback") == []
    assert smoke.in_flight()  # the smoke test is pending, for the next pass
    assert azure.arm.refused[-1][0] == SCORE


def test_a_crash_after_the_smoke_test_before_its_record_ends_in_the_same_state(world: Any) -> None:
    smoke = world()
    azure, cand = smoke.azure, smoke.name
    dying = azure.new_worker(ledger=DiesAtSmokeRecord(azure.ledger_spec.open()))

    with pytest.raises(WorkerDied):
        dying.reconcile()
    assert len(azure.arm.scoring.to(cand)) == 2 and smoke.records("rollout") == []
    assert azure.arm.traffic_puts == []

    assert smoke.state() == "smoke_passed"  # the next pass records the verdict written ahead before the crash
    assert len(azure.arm.scoring.to(cand)) == 2  # not sent again
    [passed] = smoke.records("rollout")  # one record, under the same id
    assert smoke.state() == "stepped"
    assert azure.arm.traffic_puts == [{"blue": 90, cand: 10}]
    assert passed.id in {r.id for r in smoke.records("rollout")}


def test_a_crash_between_the_smoke_test_and_the_first_step_sets_the_traffic_once(world: Any) -> None:
    smoke = world()
    azure, cand = smoke.azure, smoke.name
    assert smoke.state() == "smoke_passed"
    dying = azure.new_worker(ledger=DiesAtStepRecord(azure.ledger_spec.open()))

    with pytest.raises(WorkerDied):
        dying.reconcile()
    assert azure.arm.traffic_puts == [{"blue": 90, cand: 10}]

    assert smoke.state() == "stepped"
    assert azure.arm.traffic_puts == [{"blue": 90, cand: 10}]  # not sent again
    assert len(azure.arm.scoring.to(cand)) == 2  # and the smoke test was not run again
    assert sorted(r.id[:3] for r in smoke.records("rollout")) == ["rs-", "sm-"]  # one smoke test, one step


def test_a_request_the_candidate_does_not_answer_in_time_fails_the_smoke_test(world: Any) -> None:
    smoke = world(timeout="5s")
    smoke.azure.arm.time_out("POST", "^/score$", seconds=5.0)

    assert smoke.state() == "smoke_failed"
    [rollback] = smoke.records("rollback")
    assert rollback.details["smoke"]["answers"][0]["problem"] == (
        "no answer: no answer within 5s (ServiceResponseTimeoutError)"
    )
    assert rollback.details["smoke"]["failed"] == [0]  # the second request was answered
    assert smoke.azure.arm.traffic_puts == []


def test_a_throttled_smoke_test_is_deferred_and_sent_again_on_the_next_pass(world: Any) -> None:
    smoke = world()
    azure, cand = smoke.azure, smoke.name
    azure.arm.scoring.answer_with(ENDPOINT, cand, answers({"message": "Too many requests"}, status=429))

    report = azure.new_worker().reconcile()
    assert report.rollouts == [] and "throttled" in report.deferred[0]["error"]
    assert smoke.records("rollback") == [] and smoke.in_flight()

    azure.arm.scoring.answer_with(ENDPOINT, cand, healthy())
    assert smoke.state() == "smoke_passed"


def test_a_candidate_rolled_back_by_its_smoke_test_is_retired_after_retire_after(world: Any) -> None:
    smoke = world()
    azure, cand = smoke.azure, smoke.name
    azure.arm.scoring.answer_with(ENDPOINT, cand, model_fails(500))
    assert smoke.state() == "smoke_failed"
    azure.new_worker().reconcile()
    assert azure.arm.requests_to("DELETE", f"deployments/{cand}$") == []  # kept until retire_after (24h)

    azure.now.now = azure.now.now + timedelta(hours=25)
    azure.new_worker().reconcile()

    [retire] = smoke.records("retire")
    assert retire.outcome == "submitted" and retire.job is not None and retire.job["name"] == f"{ENDPOINT}/{cand}"
    assert azure.arm.requests_to("DELETE", f"deployments/{cand}$")


def test_a_step_without_enough_traffic_gets_a_synthetic_load_once_and_is_judged_on_it(world: Any) -> None:
    smoke = world(load=30)
    azure, cand = smoke.azure, smoke.name
    assert smoke.state() == "smoke_passed"
    assert smoke.state() == "stepped"
    started = from_iso(azure.service.ledger.get_model(MODEL).flights[guards.ROLLOUT].data["rollout"]["step_started"])
    assert started is not None
    for m in range(10):  # a quiet endpoint: 1 request a minute reaches the candidate's 10%
        azure.serve(started + timedelta(minutes=m, seconds=30), cand, ok=1)
        azure.serve(started + timedelta(minutes=m, seconds=30), "blue", ok=9)
    azure.now.now = started + timedelta(minutes=15)  # the bake (10m) and the logs' lag (5m) are over

    assert smoke.state() == "loaded"
    [load] = [r for r in smoke.records("rollout") if r.id.startswith("ld-")]
    sent = load.details["requests"]
    # what it lacked of min_requests (20): the step's 10, and the smoke test's 2 (sent in the minute the
    # step began: the passes of this test take no time)
    assert sent == 8 and load.details["answered"] == {"200": 8}
    assert "synthetic load: 8 sample request(s) sent to the candidate" in load.reason
    assert len(azure.arm.scoring.to(cand)) == 2 + 8  # the smoke test's, then the load (samples in turn)
    assert smoke.traffic() == {"blue": 90, cand: 10}  # no traffic change

    assert smoke.state() == "waiting_for_traffic"  # not read yet (the lag), and never loaded twice a step
    assert len(azure.arm.scoring.to(cand)) == 10
    azure.now.now = started + timedelta(minutes=21)
    assert smoke.state() == "stepped"  # judged on the requests it got, synthetic ones included
    assert smoke.traffic() == {"blue": 50, cand: 50}


def test_a_crash_during_a_synthetic_load_sends_it_again_and_records_it_once(world: Any) -> None:
    smoke = world(load=30)
    azure, cand = smoke.azure, smoke.name
    assert smoke.state() == "smoke_passed" and smoke.state() == "stepped"
    started = from_iso(azure.service.ledger.get_model(MODEL).flights[guards.ROLLOUT].data["rollout"]["step_started"])
    assert started is not None
    azure.now.now = started + timedelta(minutes=15)  # the bake is over: no request but the smoke test's 2

    with pytest.raises(WorkerDied):
        azure.new_worker(ledger=DiesAtLoadRecord(azure.ledger_spec.open())).reconcile()
    assert len(azure.arm.scoring.to(cand)) == 2 + 18

    assert smoke.state() == "loaded"  # the pending load, carried out again
    assert len(azure.arm.scoring.to(cand)) == 2 + 18 + 18
    assert len([r for r in smoke.records("rollout") if r.id.startswith("ld-")]) == 1


@pytest.mark.parametrize(
    "uri",
    [
        "https://collector.attacker.example/score",
        "http://diabetes-endpoint.eastus.inference.ml.azure.com/score",
        "https://diabetes-endpoint.eastus.inference.ml.azure.com.attacker.example/score",
        "https://user:pw@diabetes-endpoint.eastus.inference.ml.azure.com/score",
        "https://diabetes-endpoint.eastus.inference.ml.azure.com:8443/score",
    ],
)
def test_the_service_s_token_goes_only_to_an_azure_ml_inference_host(world: Any, uri: str) -> None:
    """An endpoint object whose scoring URI points elsewhere (a Kubernetes endpoint, or one tampered
    with) is not invoked: the service's Entra token never leaves for another host; the candidate is
    rolled back before any traffic, saying why."""
    smoke = world()
    smoke.azure.arm.endpoints[ENDPOINT]["properties"]["scoringUri"] = uri

    assert smoke.state() == "smoke_failed"

    assert smoke.azure.arm.scoring.calls == [] and smoke.azure.arm.traffic_puts == []
    [rollback] = smoke.records("rollback")
    assert (
        "the service's token is sent only to one" in rollback.reason or "sends its token only there" in rollback.reason
    )
