"""The test world's permission model (tests/rbac.py reads infra/, tests/rbac_model.py evaluates as
Azure RBAC does): what infra/ assigns is what the fakes allow.

Every test on the SDK world already runs with the roles infra/ assigns (the fake ARM and MLflow refuse
anything else); these tests show that a missing action, a narrower scope, a role deployed to the wrong
resource group or another identity's token is refused as Azure refuses it, and that the refusal
reaches the decision record with what to grant.
"""

from __future__ import annotations

import pytest

from tests import rbac, rbac_model
from tests.azure_world import DRIFT_SAMPLE, ENDPOINT, MODEL, RG, SUB, WORKSPACE_ID, WS, AzureWorld, in_workspace

AML = "Microsoft.MachineLearningServices/workspaces"
HOUR = 3600.0  # past the first hour of a worker, a 403 is a missing role, not one still propagating


def test_the_app_identity_holds_the_workspace_role_at_the_workspace_and_nothing_beyond_it() -> None:
    app = rbac.app(SUB, RG, WS)

    assert "custom workspace role" in app.roles_at(WORKSPACE_ID)
    assert app.allows(f"{AML}/jobs/write", f"{WORKSPACE_ID}/jobs/retrain-x")
    assert app.allows(f"{AML}/onlineEndpoints/deployments/write", f"{WORKSPACE_ID}/onlineEndpoints/e/deployments/d")
    other = WORKSPACE_ID.replace(f"workspaces/{WS}", "workspaces/ws-other")
    assert not app.allows(f"{AML}/jobs/write", f"{other}/jobs/retrain-x")  # another workspace, same group
    assert not app.allows(f"{AML}/onlineEndpoints/listKeys/action", f"{WORKSPACE_ID}/onlineEndpoints/e")
    assert not app.allows(f"{AML}/computes/write", f"{WORKSPACE_ID}/computes/cpu-cluster")
    # a data action is granted by dataActions only: the table role's entities, not the workspace role's
    storage = "/subscriptions/{}/resourceGroups/rg-retrain-dev/providers/Microsoft.Storage/storageAccounts/stretraindev"
    table = "Microsoft.Storage/storageAccounts/tableServices/tables/entities/write"
    assert app.allows(table, storage.format(SUB) + "/tableServices/default/tables/decisions", data=True)
    assert not app.allows(table, storage.format(SUB) + "/tableServices/default/tables/decisions")


def test_a_workspace_module_deployed_to_another_resource_group_grants_nothing_on_the_workspace() -> None:
    misplaced = rbac.principal(rbac.world(SUB, "rg-other", WS), rbac.APP_OID)

    # only Monitoring Reader reaches it, from the subscription (*/read: a read, never a job or a deployment)
    assert misplaced.roles_at(WORKSPACE_ID) == ["Monitoring Reader"]
    assert not misplaced.allows(f"{AML}/jobs/write", WORKSPACE_ID)
    assert not misplaced.allows(f"{AML}/onlineEndpoints/deployments/write", WORKSPACE_ID + "/onlineEndpoints/e")


@pytest.mark.parametrize(
    ("method", "path", "action", "scope"),
    [
        ("GET", "", f"{AML}/read", ""),
        ("PUT", "/jobs/j1", f"{AML}/jobs/write", "/jobs/j1"),
        ("GET", "/onlineEndpoints/e/deployments", f"{AML}/onlineEndpoints/deployments/read", "/onlineEndpoints/e"),
        (
            "DELETE",
            "/onlineEndpoints/e/deployments/d",
            f"{AML}/onlineEndpoints/deployments/delete",
            "/onlineEndpoints/e/deployments/d",
        ),
        ("POST", "/onlineEndpoints/e/listKeys", f"{AML}/onlineEndpoints/listKeys/action", "/onlineEndpoints/e"),
        ("PUT", "/data/d/versions/2", f"{AML}/data/versions/write", "/data/d/versions/2"),
    ],
)
def test_an_arm_request_is_checked_as_the_action_and_scope_azure_checks(
    method: str, path: str, action: str, scope: str
) -> None:
    assert rbac_model.arm_action(method, WORKSPACE_ID + path) == (action, WORKSPACE_ID + scope)


def test_a_workspace_role_without_jobs_write_records_the_refusal_and_what_to_grant(azure: AzureWorld) -> None:
    azure.arm.principal = azure.arm.principal.without(f"{AML}/jobs/write")
    azure.clock.now += HOUR

    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions

    assert (rec.action, rec.outcome) == ("retrain", "failed")
    assert "AuthorizationFailed" in rec.reason and f"{AML}/jobs/write" in rec.reason
    assert "infra/modules/workspace-access.bicep" in rec.reason  # says what to grant
    assert [a for a, _ in azure.arm.refused] == [f"{AML}/jobs/write"]
    assert azure.arm.job_puts and all(c.status == 403 for c in azure.arm.job_puts)


def test_a_workspace_role_narrowed_to_one_endpoint_cannot_submit_a_retrain(azure: AzureWorld) -> None:
    azure.arm.principal = azure.arm.principal.moved(
        "custom workspace role", f"{WORKSPACE_ID}/onlineEndpoints/{ENDPOINT}"
    )
    azure.clock.now += HOUR

    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions

    assert rec.outcome == "failed" and "AuthorizationFailed" in rec.reason
    # reads still pass: Monitoring Reader ("*/read") covers them; the write is outside the narrowed role
    assert [a for a, _ in azure.arm.refused] == [f"{AML}/jobs/write"]
    assert azure.arm.jobs == {}  # nothing was created


def test_a_token_of_another_identity_holds_none_of_the_apps_roles(azure: AzureWorld) -> None:
    azure.arm.principal = rbac_model.Principal(
        "00000000-0000-0000-0000-0000000000ff", "another identity", azure.arm.principal.grants
    )
    azure.clock.now += HOUR

    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions

    assert rec.outcome == "failed" and "does not have authorization" in rec.reason
    assert rbac.APP_OID in rec.reason  # Azure names the caller it refused


def test_the_gate_cannot_read_mlflow_runs_without_the_runs_read_action(azure: AzureWorld) -> None:
    # Monitoring Reader's */read would grant it too: this identity has neither
    reader = azure.arm.principal.dropping("Monitoring Reader")
    azure.arm.principal = reader.without(f"{AML}/experiments/runs/read")
    azure.clock.now += HOUR

    [rec] = azure.deliver(azure.finished_run("0.61")).decisions

    assert rec.model == MODEL and rec.outcome == "failed"
    assert f"{AML}/experiments/runs/read" in rec.reason
    assert (f"{AML}/experiments/runs/read", WORKSPACE_ID) in azure.arm.refused
