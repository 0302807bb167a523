"""A prod champion served from an Azure ML registry, as model age (``retrain.max_age``) and the worthiness
check read it: its creation time and lineage come from the registry version (the policy's
``environment.registry``, read through the real ``MLClient(registry_name=...)`` against the fake
registry), never from a workspace version it is not; one served from any other registry is not read."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from handlers.pickup import SOURCE_WORKSPACE
from handlers.records import iso
from tests import rbac
from tests.azure_world import DATASET, DRIFT_SAMPLE, MODEL, AzureWorld, in_workspace
from tests.builders import with_environment, with_retrain

pytestmark = pytest.mark.sdk

DOWNSTREAM = {"registry": rbac.REGISTRY, "role": "downstream"}
DEV = "/subscriptions/0c1d2e3f-3333-4a4b-8c8d-9e0f1a2b3c4d/resourceGroups/rg-ml-dev/providers/Microsoft.MachineLearningServices/workspaces/ws-dev"
LINEAGE = {"r2_score": "0.66", "retrain_decision": "de-1", "retrain_run": "dev-run-7", SOURCE_WORKSPACE: DEV}


def _registry_reads(world: AzureWorld) -> list[str]:
    return [c.path.rsplit("/registries/", 1)[-1] for c in world.arm.calls if "/registries/" in c.path]


def _world(tmp_path: Path, environment: dict[str, Any] | None, **retrain: Any) -> AzureWorld:
    """Prod: the endpoint serves version 7 of the registry (with the lineage a dev promotion writes); the
    workspace's own version 3 is old and not served."""
    world = AzureWorld(tmp_path, policy=with_environment(environment, with_retrain(retrain)))
    world.serve_from_registry("7", LINEAGE)
    world.arm.models[(MODEL, "3")]["systemData"]["createdAt"] = iso(world.now.now - timedelta(days=400))
    return world


def _registry_created(world: AzureWorld, days_ago: float) -> str:
    at = iso(world.now.now - timedelta(days=days_ago))
    world.arm.registries.registries[rbac.REGISTRY.casefold()].models[(MODEL, "7")]["systemData"]["createdAt"] = at
    return at


# --------------------------------------------------------------------------- model age


def test_a_registry_champion_older_than_max_age_is_retrained_by_its_age_in_the_registry(tmp_path: Path) -> None:
    world = _world(tmp_path, DOWNSTREAM, max_age="30d")
    created = _registry_created(world, 40)
    [started] = world.reconcile().started
    assert started.outcome == "submitted" and started.trigger["event_type"] == "retrain.max_age"
    assert started.reason.startswith(
        f"model age: the champion {MODEL}:7 of registry {rbac.REGISTRY} (diabetes-endpoint/blue) was created {created}"
    )
    assert started.trigger["event_id"] == f"max-age:registry/{rbac.REGISTRY}/{MODEL}:7:1"
    assert f"{rbac.REGISTRY}/models/{MODEL}/versions/7" in _registry_reads(world)


def test_a_young_registry_champion_is_not_retrained_whatever_the_workspace_versions_age(tmp_path: Path) -> None:
    world = _world(tmp_path, DOWNSTREAM, max_age="30d")
    _registry_created(world, 10)  # the workspace's version 3, 400 days old, is not what the endpoint serves
    assert world.reconcile().started == [] and world.arm.job_puts == []
    assert f"{rbac.REGISTRY}/models/{MODEL}/versions/7" in _registry_reads(world)


def test_a_champion_from_a_registry_the_policy_does_not_name_has_an_unknown_age_and_is_not_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = _world(tmp_path, None, max_age="30d")
    _registry_created(world, 400)
    with caplog.at_level(logging.WARNING, logger="handlers.watcher"):
        assert world.reconcile().started == []
    assert _registry_reads(world) == [] and world.arm.job_puts == []
    assert f"model age of model={MODEL} is unknown" in caplog.text
    assert "the policy names no registry for it (models.<model>.environment.registry" in caplog.text


# --------------------------------------------------------------------------- worthiness


def test_a_registry_champion_is_not_judged_by_a_workspace_version_trained_on_the_latest_data(
    tmp_path: Path,
) -> None:
    """Before, the check fell back to the workspace's latest version (5, trained on the latest data) and
    skipped the retrain as "not worth it"; the champion is the registry's version 7, trained in dev."""
    world = _world(tmp_path, DOWNSTREAM)
    world.trained_on("5", "2")  # the latest workspace version, never served, trained on the latest data
    [rec] = world.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert (rec.action, rec.outcome) == ("retrain", "submitted"), rec.reason
    judged = rec.details["worthiness"]
    assert judged["judged"] is False and judged["champion"] == f"{MODEL}:7 of registry {rbac.REGISTRY}"
    assert f"was trained in {DEV}, run dev-run-7 (its lineage, read from the registry)" in judged["why"]
    assert "its training data is not compared" in judged["why"]
    assert f"{rbac.REGISTRY}/models/{MODEL}/versions/7" in _registry_reads(world)
    assert not any(
        c.path.endswith(f"/models/{MODEL}/versions") for c in world.arm.calls if "/registries/" not in c.path
    )
    assert len(world.arm.job_puts) == 1


def test_a_champion_from_a_registry_the_policy_does_not_name_is_not_read_for_worthiness(tmp_path: Path) -> None:
    world = _world(tmp_path, None)
    world.trained_on("5", "2")
    [rec] = world.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "submitted", rec.reason
    why = rec.details["worthiness"]["why"]
    assert why.startswith(f"the champion {MODEL}:7 of registry {rbac.REGISTRY} was not read: ") and DATASET not in why
    assert _registry_reads(world) == []


def test_without_the_registry_role_the_age_look_waits_and_the_check_goes_ahead_naming_the_fix(tmp_path: Path) -> None:
    world = _world(tmp_path, DOWNSTREAM, max_age="30d")
    _registry_created(world, 40)
    world.arm.principal = world.arm.principal.without("Microsoft.MachineLearningServices/registries/assets/read")
    world.actions.client.started -= 7200  # past the hour new role assignments may take: a refusal is final
    report = world.reconcile()
    assert report.started == [] and world.arm.job_puts == []
    [deferred] = [d for d in report.deferred if d["decision"] == "freshness"]
    assert "registry-access.bicep" in deferred["error"] and "registries/assets/read" in deferred["error"]
    [rec] = world.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "submitted", rec.reason
    assert "the champion's lineage could not be read" in rec.details["worthiness"]["why"]
    assert "registry-access.bicep" in rec.details["worthiness"]["why"]
