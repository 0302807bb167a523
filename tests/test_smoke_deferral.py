"""A smoke test whose requests the endpoint does not take, end to end through the real Azure ML SDK and
the fake ARM's scoring URIs: the endpoint refusing the service's identity (401, a role not granted or not
applied yet) or throttling (429) defers it, bounded by ``smoke.max_wait`` from its first deferral of any
kind (handlers/rollout/smoke_outage.py, ``refused``): one that clears within it goes on to be judged,
one that never clears rolls the candidate back before any traffic, saying what it waited for and how long."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from handlers.records import iso
from handlers.rollout.smoke_outage import OUTAGE
from tests.azure_world import ENDPOINT
from tests.fake_scoring import SCORE, answers, healthy, model_fails
from tests.ledgers import LedgerSpec
from tests.smoke_world import Smoke, smoke_worlds


@pytest.fixture
def world(tmp_path: Path, ledger_spec: LedgerSpec, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from smoke_worlds(tmp_path, ledger_spec, monkeypatch)


def unauthorized(smoke: Smoke) -> Callable[[], None]:
    """The service's identity without the scoring action (401); what grants it back."""
    granted = smoke.azure.arm.principal
    smoke.azure.arm.principal = granted.without(SCORE)

    def grant() -> None:
        smoke.azure.arm.principal = granted

    return grant


def throttled(smoke: Smoke) -> Callable[[], None]:
    """The endpoint throttling every request to the candidate (429); what ends it."""
    smoke.azure.arm.scoring.answer_with(ENDPOINT, smoke.name, answers({"message": "Too many requests"}, status=429))
    return lambda: smoke.azure.arm.scoring.answer_with(ENDPOINT, smoke.name, healthy())


REFUSALS = {"401": (unauthorized, "(401) when invoking deployment"), "429": (throttled, "throttled")}


def deferred_at(smoke: Smoke, at: Any) -> str:
    """One reconciler pass at ``at`` that defers the smoke test; what its report says."""
    smoke.azure.now.now = at
    report = smoke.azure.new_worker().reconcile()
    assert report.rollouts == [] and len(report.deferred) == 1 and smoke.in_flight()
    return str(report.deferred[0]["error"])


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_a_refusal_or_throttling_that_never_clears_rolls_the_candidate_back_after_max_wait(
    world: Any, kind: str
) -> None:
    smoke = world(max_wait="30m")
    azure = smoke.azure
    cause, said = REFUSALS[kind]
    cause(smoke)
    first = azure.now.now
    for minutes in (0, 10, 20, 29):
        assert said in deferred_at(smoke, first + timedelta(minutes=minutes))
    azure.now.now = first + timedelta(minutes=30)

    assert smoke.state() == "smoke_failed"

    [rollback] = smoke.records("rollback")
    assert rollback.reason.startswith(f"rollout of {ENDPOINT}/{smoke.name} rolled back before any traffic: ")
    assert f"smoke test never judged: deferred since {iso(first)} (30m, 5 tries), its requests still not taken: " in (
        rollback.reason
    )
    assert said in rollback.reason and "smoke.max_wait 30m" in rollback.reason
    if kind == "401":  # names the action to grant and the roles that hold it
        assert SCORE in rollback.reason and "AzureML Data Scientist" in rollback.reason
    assert rollback.details["smoke"]["deferred"]["times"] == 5
    assert rollback.details["smoke"]["deferred"]["since"] == iso(first)
    assert azure.arm.traffic_puts == [] and not smoke.in_flight()  # the slot is free, no traffic ever
    assert azure.new_worker().reconcile().deferred == []  # nothing left to try again


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_a_refusal_or_throttling_that_clears_within_max_wait_goes_on_to_pass(world: Any, kind: str) -> None:
    smoke = world(max_wait="30m")
    azure = smoke.azure
    cause, said = REFUSALS[kind]
    clear = cause(smoke)
    first = azure.now.now
    for minutes in (0, 15):
        assert said in deferred_at(smoke, first + timedelta(minutes=minutes))
    clear()
    azure.now.now = first + timedelta(minutes=29)

    assert smoke.state() == "smoke_passed"
    [passed] = smoke.records("rollout")
    assert passed.details["deferred"]["times"] == 2  # the record says what it waited for, and how long
    assert smoke.records("rollback") == []
    assert smoke.state() == "stepped"
    assert azure.arm.traffic_puts == [{"blue": 90, smoke.name: 10}]


def test_throttling_after_an_outage_is_bounded_from_the_outage_s_first_deferral(world: Any) -> None:
    smoke = world(max_wait="30m")
    azure = smoke.azure
    for deployment in (smoke.name, "blue"):
        azure.arm.scoring.answer_with(ENDPOINT, deployment, model_fails(503))
    first = azure.now.now
    assert OUTAGE in deferred_at(smoke, first)
    throttled(smoke)
    assert "throttled" in deferred_at(smoke, first + timedelta(minutes=20))
    azure.now.now = first + timedelta(minutes=30)  # 10 minutes of throttling, 30 since the first deferral

    assert smoke.state() == "smoke_failed"

    [rollback] = smoke.records("rollback")
    assert f"smoke test never judged: deferred since {iso(first)} (30m, 2 tries)" in rollback.reason
    assert rollback.details["smoke"]["outage"]["times"] == 1  # what it waited out first, for the record
    assert azure.arm.traffic_puts == []
