"""Rollouts judged on the health source the settings or the policy choose: platform metrics without a Log
Analytics workspace, the role that source needs, a policy's source over the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from handlers.rollout_rules import DEFAULT_LAG
from tests.azure_world import ENDPOINT, MODEL, SUB, WORKSPACE_ID, AzureWorld
from tests.builders import EXAMPLE_POLICY
from tests.fake_metrics import MONITORING_READER
from tests.ledgers import LedgerSpec
from tests.rollouts import Rollout, healthy_rollout

# --------------------------------------------------------------------------- choosing the source


def test_without_a_log_analytics_workspace_a_healthy_candidate_is_promoted_from_platform_metrics(
    ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    world = AzureWorld(tmp_path, ledger_spec, source="metrics", logs_workspace=False)
    assert world.settings.log_analytics_workspace_id is None
    rollout = Rollout(world)
    assert rollout.state() == "stepped"

    healthy_rollout(rollout)

    promote = rollout.record("promote")
    assert (
        promote.details["health"]["source"] == "metrics" and "RequestsPerMinute" in promote.details["health"]["request"]
    )
    assert world.logs.calls == [] and world.metrics.calls and world.metrics.unexpected == []
    assert world.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {rollout.name: 100}
    world.close()


def test_with_monitoring_reader_on_the_workspace_only_the_rollout_defers_and_says_which_role_is_missing(
    ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The role as infra/ used to assign it (on the workspace): every read of the metrics batch API is
    401, so nothing is decided on a guess, and the deferral says what to grant where."""
    monkeypatch.chdir(tmp_path)
    world = AzureWorld(tmp_path, ledger_spec, source="metrics", logs_workspace=False)
    as_infra = world.metrics.principal
    assert as_infra is not None
    world.metrics.principal = as_infra.moved("Monitoring Reader", WORKSPACE_ID)
    rollout = Rollout(world)
    assert rollout.state() == "stepped"
    rollout.serve(minutes=10, ok=10)
    rollout.bake()
    before = rollout.flight_data()

    report = rollout.reconcile()

    assert report.rollouts == [] and len(report.deferred) == 1
    error = report.deferred[0]["error"]
    assert f"Monitoring Reader ({MONITORING_READER}) on the subscription {SUB} itself" in error and "401" in error
    assert rollout.flight_data() == before and [c.status for c in world.metrics.calls] == [401]
    world.metrics.principal = as_infra  # as infra/ assigns it now: on the subscription
    assert rollout.state() == "stepped"
    world.close()


def test_a_policy_s_health_source_overrides_the_setting(
    ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    mp = EXAMPLE_POLICY.models[MODEL]
    assert mp.deploy is not None
    health = mp.deploy.rollout.health.model_copy(update={"source": "logs"})
    deploy = mp.deploy.model_copy(update={"rollout": mp.deploy.rollout.model_copy(update={"health": health})})
    policy = EXAMPLE_POLICY.model_copy(
        update={"models": {**EXAMPLE_POLICY.models, MODEL: mp.model_copy(update={"deploy": deploy})}}
    )
    world = AzureWorld(tmp_path, ledger_spec, source="metrics", policy=policy)
    rollout = Rollout(world)
    rollout.lag = DEFAULT_LAG["logs"]
    rollout.state()

    healthy_rollout(rollout, source="logs")

    assert rollout.record("promote").details["health"]["source"] == "logs"
    assert world.metrics.calls == [] and len(world.logs.calls) == 3
    world.close()
