"""A dev (upstream) environment shares what it promotes into the registry (issue 25): the real SDK
imports the promoted workspace version into the fake registry (discovery, a version lookup, ``POST
.../import``), tagged with its lineage, with only the roles infra/ assigns to an upstream environment;
the promote record says so, and a pass that finds it shared already does not share it again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handlers.lineage import lineage, share_target
from handlers.records import DecisionRecord
from tests import rbac
from tests.azure_world import MODEL, WORKSPACE_ID, AzureWorld
from tests.builders import with_environment
from tests.ledgers import LedgerSpec


@pytest.fixture
def dev(tmp_path: Path, ledger_spec: LedgerSpec) -> Iterator[AzureWorld]:
    azure = AzureWorld(tmp_path, ledger_spec, policy=with_environment({"registry": rbac.REGISTRY, "role": "upstream"}))
    azure.with_registry("upstream")
    yield azure
    azure.close()
    assert azure.arm.unexpected == []


def test_a_promotion_in_dev_appears_in_the_registry_with_its_lineage(dev: AzureWorld) -> None:
    deploy, promote = dev.promoted()
    shared = promote.details["shared"]
    assert shared["outcome"] == "shared", promote.reason
    [(key, version)] = dev.arm.registries.registries[rbac.REGISTRY.casefold()].models.items()
    tags = version["properties"]["tags"]
    assert key == (MODEL, "4")
    assert tags["retrain_decision"] == deploy.id and tags["retrain_promotion"] == promote.id
    assert tags["retrain_source_workspace"] == WORKSPACE_ID and tags["r2_score"] == "0.71"
    assert tags["retrain_run"] == "retrain-sklearn-regression-model-0123456789abcdef"
    assert f"shared into registry {rbac.REGISTRY}: shared" in promote.reason


def test_a_promotion_shared_already_is_not_imported_again(dev: AzureWorld) -> None:
    deploy, promote = dev.promoted()
    again = dev.actions.share_promoted(
        "diabetes-endpoint", str(deploy.details["rendered"]["deployment"]), rbac.REGISTRY, lineage(deploy, promote.id)
    )
    assert again["outcome"] == "shared already"
    imports = [c for c in dev.arm.calls if c.path.endswith("/import")]
    assert len(imports) == 1


def test_without_the_write_role_the_share_is_recorded_failed_and_the_promotion_stands(dev: AzureWorld) -> None:
    dev.arm.principal = dev.arm.principal.without("Microsoft.MachineLearningServices/registries/assets/write")
    dev.actions.client.started -= 7200  # past the hour new role assignments take
    _, promote = dev.promoted()
    assert promote.outcome == "submitted"
    assert promote.details["shared"]["outcome"] == "failed"
    assert "registries/assets/write" in promote.details["shared"]["error"]
    assert dev.arm.registries.registries[rbac.REGISTRY.casefold()].models == {}


def test_the_lineage_carries_the_decision_the_run_and_the_gate_figures() -> None:
    gate: dict[str, Any] = {
        "metrics": [{"metric": "auc", "candidate": 0.81, "slices": [{"name": "auc_eu", "candidate": 0.8}]}]
    }
    rendered = {"candidate": {"run_id": "run-9"}, "share_to": "mlreg-shared"}
    deploy = DecisionRecord(
        id="de-1", model="m", action="deploy", outcome="submitted", reason="r", trigger={}, at="t",
        details={"rendered": rendered, "gate": gate},
    )  # fmt: skip
    assert lineage(deploy, "pr-2") == {
        "retrain_decision": "de-1",
        "retrain_promotion": "pr-2",
        "retrain_run": "run-9",
        "auc": "0.81",
        "auc_eu": "0.8",
    }
    assert share_target(deploy) == "mlreg-shared" and share_target(None) is None
