"""A dependency outage during the smoke test, end to end through the real Azure ML SDK and the fake ARM's
scoring URIs (tests/fake_scoring.py): the requests the candidate failed on answers an outage gives go to
the live deployment too; when it fails them as well the smoke test is deferred (bounded by
``smoke.max_wait``), when it answers them the candidate is rolled back as before, showing both statuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from handlers import guards
from handlers.records import iso
from handlers.rollout.smoke_outage import OUTAGE
from tests.azure_world import ENDPOINT, MODEL
from tests.crashes import WorkerDied
from tests.fake_scoring import answers, healthy, model_fails
from tests.ledgers import LedgerSpec
from tests.smoke_world import SAMPLES, DiesWritingPending, Smoke, json_dump, smoke_worlds


@pytest.fixture
def world(tmp_path: Path, ledger_spec: LedgerSpec, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from smoke_worlds(tmp_path, ledger_spec, monkeypatch)


def outage(smoke: Smoke, status: int = 503) -> None:
    """A downstream every scoring script calls is down: each deployment's script answers ``status``."""
    for deployment in (smoke.name, "blue"):
        smoke.azure.arm.scoring.answer_with(ENDPOINT, deployment, model_fails(status))


def waited(smoke: Smoke) -> dict[str, Any]:
    flight = smoke.azure.service.ledger.get_model(MODEL).flights[guards.ROLLOUT]
    return dict(flight.data["rollout"]["pending"]["details"]["outage"])


def test_an_outage_both_deployments_share_defers_the_smoke_test_until_it_clears(world: Any) -> None:
    smoke = world()
    azure, cand = smoke.azure, smoke.name
    outage(smoke)
    first = azure.now.now

    report = azure.new_worker().reconcile()

    assert report.rollouts == [] and len(report.deferred) == 1
    said = report.deferred[0]["error"]
    assert OUTAGE in said and "request 0: candidate status 424 (model 503), blue status 424 (model 503)" in said
    assert smoke.records("rollback") == [] and smoke.in_flight() and azure.arm.traffic_puts == []
    assert azure.arm.scoring.to("blue") == SAMPLES  # the failed requests, sent to the live deployment
    assert waited(smoke) == {
        "since": iso(first),
        "times": 1,
        "last": iso(first),
        "until": iso(first + timedelta(hours=1)),
    }
    [view] = [m for m in azure.new_worker().models() if m["model"] == MODEL]  # GET /api/models, the console's
    assert view["in_flight"]["rollout"]["smoke_deferred"] == {"why": OUTAGE, **waited(smoke)}

    azure.now.now = first + timedelta(minutes=5)
    outage(smoke)
    assert len(azure.new_worker().reconcile().deferred) == 1
    assert waited(smoke)["since"] == iso(first) and waited(smoke)["times"] == 2

    for deployment in (cand, "blue"):  # the downstream is back
        azure.arm.scoring.answer_with(ENDPOINT, deployment, healthy())
    azure.now.now = first + timedelta(minutes=10)
    assert smoke.state() == "smoke_passed"
    [passed] = smoke.records("rollout")
    assert passed.details["outage"]["times"] == 2  # the record says it waited out an outage, and how long
    assert smoke.state() == "stepped"


def test_an_outage_that_never_clears_within_max_wait_rolls_the_candidate_back(world: Any) -> None:
    smoke = world(max_wait="30m")
    azure = smoke.azure
    outage(smoke, 500)
    first = azure.now.now
    for minutes in (0, 10, 20):
        azure.now.now = first + timedelta(minutes=minutes)
        assert azure.new_worker().reconcile().deferred
    azure.now.now = first + timedelta(minutes=30)

    assert smoke.state() == "smoke_failed"

    [rollback] = smoke.records("rollback")
    assert f"the outage never cleared: blue failed them too on each of 4 tries since {iso(first)}" in rollback.reason
    assert "smoke.max_wait 30m" in rollback.reason
    assert rollback.details["smoke"]["outage"]["times"] == 3
    assert azure.arm.traffic_puts == [] and not smoke.in_flight()


def test_timeouts_on_both_deployments_are_an_outage_too(world: Any) -> None:
    smoke = world(timeout="5s")
    smoke.azure.arm.time_out("POST", "^/score$", times=4, seconds=5.0)  # the candidate's two, then blue's two

    report = smoke.azure.new_worker().reconcile()

    assert "request 1: candidate no answer, blue no answer" in report.deferred[0]["error"]
    assert smoke.records("rollback") == []


def test_a_candidate_failing_what_the_live_deployment_answers_is_rolled_back_with_both_statuses(world: Any) -> None:
    smoke = world()
    smoke.azure.arm.scoring.answer_with(ENDPOINT, smoke.name, answers({"message": "bad gateway"}, status=502))

    assert smoke.state() == "smoke_failed"

    [rollback] = smoke.records("rollback")
    assert (
        "the live deployment blue answered them, so the failure is the candidate's (request 0: candidate status 502, blue status 200; request 1"
        in rollback.reason
    )
    assert rollback.details["smoke"]["live"]["asked"][0]["live_status"] == 200
    assert "predictions" not in json_dump(rollback.details)  # blue's answer is not recorded


def test_a_candidate_s_own_failure_is_not_taken_to_the_live_deployment(world: Any) -> None:
    smoke = world()
    smoke.azure.arm.scoring.answer_with(ENDPOINT, smoke.name, model_fails(400))  # its script refuses the schema

    assert smoke.state() == "smoke_failed"

    assert smoke.azure.arm.scoring.to("blue") == []
    [rollback] = smoke.records("rollback")
    assert "live" not in rollback.details["smoke"] and "blue" not in rollback.reason


def test_with_a_champion_comparison_its_answers_are_used_and_nothing_more_is_sent(world: Any) -> None:
    smoke = world(champion={"field": "predictions", "abs_tolerance": 0.01})
    outage(smoke, 502)

    report = smoke.azure.new_worker().reconcile()

    assert OUTAGE in report.deferred[0]["error"]
    assert smoke.azure.arm.scoring.to("blue") == SAMPLES  # once, for the comparison


def test_max_wait_0s_rolls_back_at_once_saying_it_was_an_outage(world: Any) -> None:
    smoke = world(max_wait="0s")
    outage(smoke)

    assert smoke.state() == "smoke_failed"
    [rollback] = smoke.records("rollback")
    assert f"{OUTAGE} (" in rollback.reason and "smoke.max_wait is 0s: no waiting" in rollback.reason


def keeps_the_deferral(pending: dict[str, Any]) -> bool:
    return pending.get("kind") == "smoke" and "outage" in pending.get("details", {})


@pytest.mark.both_ledgers
def test_a_worker_dying_as_it_keeps_the_deferral_leaves_the_smoke_test_pending_for_the_next_pass(
    world: Any,
) -> None:
    smoke = world()
    azure = smoke.azure
    outage(smoke)
    with pytest.raises(WorkerDied):
        azure.new_worker(ledger=DiesWritingPending(azure.ledger_spec.open(), keeps_the_deferral)).reconcile()
    flight = azure.service.ledger.get_model(MODEL).flights[guards.ROLLOUT]
    assert flight.data["rollout"]["pending"]["kind"] == "smoke"  # written ahead, carried out again next pass
    assert "outage" not in flight.data["rollout"]["pending"]["details"] and smoke.records("rollback") == []

    azure.now.now = azure.now.now + timedelta(minutes=5)
    assert azure.new_worker().reconcile().deferred
    assert waited(smoke)["times"] == 1 and waited(smoke)["since"] == iso(azure.now.now)  # the first one kept
    azure.now.now = azure.now.now + timedelta(minutes=5)
    assert azure.new_worker().reconcile().deferred
    assert waited(smoke)["times"] == 2
    assert len(azure.arm.scoring.to("blue")) == 3 * len(SAMPLES)  # each pass asked the live deployment again


@pytest.mark.slow
@pytest.mark.browser
def test_the_console_says_the_smoke_test_waits_out_an_outage(world: Any) -> None:
    from tests.browser import browser_page
    from tests.hosts import hosting

    smoke = world()
    outage(smoke)
    assert smoke.azure.new_worker().reconcile().deferred
    until = waited(smoke)["until"]
    with hosting(smoke.azure) as url, browser_page() as page:
        page.goto(f"{url}/api/console")
        card = page.locator(f'article.model[data-model="{MODEL}"]')
        card.locator(".rollout").wait_for()
        line = card.locator(".rollout-step").inner_text()
    assert f"smoke test deferred: {OUTAGE} (since " in line
    assert f"1 try; tried again each pass, rolled back if it has not cleared by {until}; rollback, promote" in line
