"""A prod endpoint whose champion is served from an Azure ML registry (issue 25): the policy's
``environment.registry`` is read through the real ``MLClient(registry_name=...)`` against the fake
registry (discovery, then the registry's regional endpoint), with only the roles infra/ assigns;
the champion is judged by the metric its registry version's tags carry. Any other registry is not
read: the endpoint does not choose what the service trusts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from handlers.errors import PolicyError
from handlers.policy_file import parse_policy
from tests import rbac
from tests.azure_world import ENDPOINT, MODEL, REGISTRY_SUB, AzureWorld
from tests.builders import with_environment
from tests.ledgers import LedgerSpec


def _prod(tmp_path: Path, ledger_spec: LedgerSpec, environment: dict[str, Any] | None) -> AzureWorld:
    """The example policy with ``environment`` on the model; the live deployment serves the registry's
    version 7, whose tags carry r2_score 0.66 (as a promotion from dev writes them)."""
    azure = AzureWorld(tmp_path, ledger_spec, policy=with_environment(environment))
    azure.serve_from_registry("7", {"r2_score": "0.66", "retrain_decision": "de-1"})
    return azure


@pytest.fixture
def prod(tmp_path: Path, ledger_spec: LedgerSpec) -> Any:
    azure = _prod(tmp_path, ledger_spec, {"registry": rbac.REGISTRY, "role": "downstream"})
    yield azure
    azure.close()
    assert azure.arm.unexpected == []


def _registry_calls(azure: AzureWorld) -> list[str]:
    return [f"{c.method} {c.url.split('/')[2]}{c.path}" for c in azure.arm.calls if "registr" in c.path]


def test_a_worse_candidate_is_skipped_against_the_registry_champions_tagged_metric(prod: AzureWorld) -> None:
    [rec] = prod.deliver(prod.finished_run(r2="0.61")).decisions
    assert rec.outcome == "skipped"
    assert (rec.details["gate"]["champion"], rec.details["gate"]["candidate"]) == (0.66, 0.61)
    assert _registry_calls(prod) == [
        f"GET eastus.api.azureml.ms/registrymanagement/v1.0/registries/{rbac.REGISTRY}/discovery",
        "GET cert-westeurope.experiments.azureml.net/mferp/managementfrontend/subscriptions/"
        f"{REGISTRY_SUB}/resourceGroups/{rbac.REGISTRY_GROUP}/providers/Microsoft.MachineLearningServices/"
        f"registries/{rbac.REGISTRY}/models/{MODEL}/versions/7",
    ]
    assert prod.arm.writes() == []


def test_a_better_candidate_than_the_registry_champion_is_rolled_out(prod: AzureWorld) -> None:
    [rec] = prod.deliver(prod.finished_run(r2="0.71")).decisions
    assert rec.outcome == "submitted", rec.reason
    assert (rec.details["gate"]["champion"], rec.details["gate"]["candidate"]) == (0.66, 0.71)
    assert prod.arm.requests_to("PUT", r"^onlineEndpoints/[^/]+/deployments/") != []


def test_the_registry_client_is_built_once_per_worker(prod: AzureWorld) -> None:
    prod.deliver(prod.finished_run(r2="0.61", run_id="retrain-one"))
    prod.deliver(prod.finished_run(r2="0.60", run_id="retrain-two"))
    discoveries = [c for c in _registry_calls(prod) if c.endswith("/discovery")]
    assert len(discoveries) == 1


def test_a_champion_from_a_registry_the_policy_does_not_name_is_not_read(prod: AzureWorld) -> None:
    ref = f"azureml://registries/theirs/models/{MODEL}/versions/2"
    prod.arm.deployments[(ENDPOINT, "blue")]["properties"]["model"] = ref
    [rec] = prod.deliver(prod.finished_run(r2="0.99")).decisions
    assert rec.outcome == "skipped"
    assert f"the policy reads registry {rbac.REGISTRY!r} only" in rec.reason
    assert _registry_calls(prod) == [] and prod.arm.writes() == []


def test_without_an_environment_a_registry_champion_is_a_skip_that_names_the_key(
    tmp_path: Path, ledger_spec: LedgerSpec
) -> None:
    azure = _prod(tmp_path, ledger_spec, None)
    try:
        [rec] = azure.deliver(azure.finished_run(r2="0.99")).decisions
        assert rec.outcome == "skipped"
        assert f"models.{MODEL}.environment.registry" in rec.reason
        assert _registry_calls(azure) == []
    finally:
        azure.close()


def test_without_the_registry_role_the_read_is_refused_and_recorded_with_the_fix(prod: AzureWorld) -> None:
    prod.arm.principal = prod.arm.principal.without("Microsoft.MachineLearningServices/registries/assets/read")
    prod.actions.client.started -= 7200
    [rec] = prod.deliver(prod.finished_run(r2="0.71")).decisions
    assert rec.outcome == "failed"
    assert "registry-access.bicep" in rec.reason and "registries/assets/read" in rec.reason
    assert prod.arm.refused[-1][0] == "Microsoft.MachineLearningServices/registries/assets/read"
    assert prod.arm.writes() == []


def test_infra_grants_the_registry_reader_on_the_registry_only() -> None:
    registry = (
        f"/subscriptions/{REGISTRY_SUB}/resourceGroups/{rbac.REGISTRY_GROUP}/providers/"
        f"Microsoft.MachineLearningServices/registries/{rbac.REGISTRY}"
    )
    app = rbac.principal(rbac.world("sub-ml", "rg-mlops", "ws", registry_subscription=REGISTRY_SUB), rbac.APP_OID)
    read, write = (f"Microsoft.MachineLearningServices/registries/assets/{v}" for v in ("read", "write"))
    assert app.allows(read, registry) and app.allows("Microsoft.MachineLearningServices/registries/read", registry)
    assert not app.allows(write, registry)
    assert not app.allows("Microsoft.MachineLearningServices/registries/assets/delete", registry)
    other = registry.replace(rbac.REGISTRY, "another-registry")
    assert not app.allows(read, other)


def test_the_models_view_shows_the_registry_the_champions_are_read_from(prod: AzureWorld) -> None:
    [view] = [m for m in prod.worker.models() if m["model"] == MODEL]
    assert view["environment"] == {"registry": rbac.REGISTRY, "role": "downstream"}


def _environment_problems(environment: Any) -> list[str]:
    text = yaml.safe_dump({"models": {"churn": {"retrain": {"pipeline": "churn-train:3"}, "environment": environment}}})
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.yaml")
    return info.value.problems


@pytest.mark.parametrize(
    ("environment", "says"),
    [
        ({"registry": "mlreg-shared", "role": "dev"}, "write role: upstream"),
        ({"registry": "mlreg-shared", "role": "prod"}, "write role: downstream"),
        ({"registry": "azureml://registries/mlreg-shared", "role": "downstream"}, "write its name"),
        ({"role": "downstream"}, "registry"),
        ({"registry": "mlreg-shared", "role": "downstream", "topic": "x"}, "topic"),
    ],
)
def test_an_environment_the_service_cannot_serve_is_refused_naming_the_key_and_the_fix(
    environment: dict[str, Any], says: str
) -> None:
    [problem] = _environment_problems(environment)
    assert "models.churn.environment" in problem and says in problem
