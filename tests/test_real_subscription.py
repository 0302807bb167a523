"""The loop as a real subscription would run it: from a finished run to a promoted model, then a
second candidate rolled back and retired, through the real Azure ML SDK and the real
``MetricsClient``, with nothing granted but what ``infra/`` assigns (tests/rbac.py reads it from the
Bicep), the function app in another region than the workspace (as azd's Flex Consumption location
allows), and a data collector on the live deployment (the v2 model-monitoring setup).

Each rule the fakes keep would stop this path in Azure if the code or ``infra/`` broke it: a role
missing an action or assigned at the wrong scope (403 from ARM, 401 from the metrics batch API), the
metrics asked of the app's region (empty answers), an aggregation the metric does not have (501), the
candidate's data-asset versions (``data/versions/write``), an operation that takes minutes, a
deployment that holds quota after its rollback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import rbac
from tests.azure_world import APP_REGION, ENDPOINT, REGION, RG, SUB, WS, AzureWorld
from tests.ledgers import LedgerSpec
from tests.rollouts import Rollout, healthy_rollout, roll_back


@pytest.mark.both_ledgers
def test_a_finished_run_is_promoted_from_platform_metrics_and_a_rolled_back_one_is_retired(
    ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    world = AzureWorld(tmp_path, ledger_spec, source="metrics", logs_workspace=False)
    # the world as infra/ makes it
    assert world.arm.principal == rbac.app(SUB, RG, WS) and world.metrics.principal == world.arm.principal
    assert world.settings.metrics_region == REGION != APP_REGION
    live = world.arm.deployments[(ENDPOINT, "blue")]["properties"]
    assert set(live["dataCollector"]["collections"]) == {"model_inputs", "model_outputs"}

    # 1. A finished run: the candidate is registered and created beside blue, collecting as blue does
    first = Rollout(world, run_id="retrain-sklearn-regression-model-00000000000000a1", r2="0.61")
    collections = world.arm.deployments[(ENDPOINT, first.name)]["properties"]["dataCollector"]["collections"]
    assert set(collections) == {"model_inputs", "model_outputs"}
    assert [c.path for c in world.arm.requests_to("PUT", r"^data/")], "the SDK registers the collections' data"

    # ... judged from platform metrics at every step, and promoted
    assert first.state() == "stepped"
    healthy_rollout(first)
    promote = first.record("promote")
    assert promote.details["health"]["source"] == "metrics"
    assert world.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {first.name: 100}
    hosts = {c.host for c in world.metrics.calls}
    assert hosts == {f"{REGION}.metrics.monitor.azure.com"}, hosts  # the workspace's region, not the app's
    assert {c.query["aggregation"] for c in world.metrics.calls} == {"Average"}
    assert all(c.status == 200 for c in world.metrics.calls) and world.metrics.wrong_region == []

    # 2. A second finished run, better still: its candidate fails its first step and is rolled back
    world.provisioned()
    second = Rollout(world, run_id="retrain-sklearn-regression-model-00000000000000b2", r2="0.70")
    assert second.name not in (first.name, "blue")
    rollback = roll_back(second)
    assert world.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {first.name: 100}

    # ... kept for retire_after (24 h in the example policy), then deleted: its instances stop billing
    world.now.advance(hours=23)
    assert (ENDPOINT, second.name) in world.arm.deployments
    assert all(r.details["deployment"] != second.name for r in second.reconcile().retired)
    world.now.advance(hours=1, minutes=1)
    # blue, demoted a day ago, goes first; while its deletion updates the endpoint, ARM answers the
    # second deletion 409, and the pass leaves it to the next
    report = second.reconcile()
    assert [r.details["deployment"] for r in report.retired] == ["blue"]
    assert "409" in report.deferred[0]["error"] and second.name in report.deferred[0]["error"]
    world.provisioned()
    [retired] = second.reconcile().retired
    assert (retired.details["deployment"], retired.outcome) == (second.name, "submitted")
    assert f"rolled back at {rollback.at} by {rollback.id}" in retired.reason
    world.provisioned()
    assert (ENDPOINT, second.name) not in world.arm.deployments
    assert sorted(name for endpoint, name in world.arm.deployments if endpoint == ENDPOINT) == [first.name]
    assert second.released() and world.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {first.name: 100}

    # nothing was refused on the way: every request was one the roles infra/ assigns allow
    assert world.arm.refused == [] and world.arm.unexpected == [] and world.metrics.unexpected == []
