"""Deployment-name squatting (issue 21, finding 1, as tests/test_job_squatting.py shows it for jobs): a
workspace user creates the candidate deployment the service is about to create on the endpoint, under
its name, or tags a model version with the deploy decision, before the service does. The service must
adopt neither (the rollout would move production traffic to it), and name its candidate with a key no
workspace user holds (RETRAIN_JOB_NAME_KEY), so that the name cannot be predicted.

Through the real azure-ai-ml SDK against the fake ARM (tests/azure_world.py), on SQLite (the crash on
both ledgers); the workspace user is another identity with their own ``MLClient`` on the same workspace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from azure.ai.ml.entities import Model

from handlers.decisions import decide
from handlers.envelopes import envelope_from_dict, to_signal, workspace_key
from handlers.jobnames import deployment_name
from handlers.plans import Deploy
from tests.azure_world import (
    ENDPOINT,
    JOB_NAME_KEY,
    MODEL,
    WORKSPACE_ID,
    AzureWorld,
    DiesAfterActing,
    WorkerDied,
)
from tests.builders import EXAMPLE_POLICY
from tests.conftest import workspace_user
from tests.fake_http import APP_CLIENT_ID, USER_UPN

# --------------------------------------------------------------------------- candidate deployments


def public_deploy_plan(raw: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    """The deploy decision's id, its plan's candidate deployment name and its tags, as anyone can
    compute them from a run's event."""
    workspaces = frozenset({workspace_key(WORKSPACE_ID)})
    signal = to_signal(envelope_from_dict(raw), workspaces)
    [decision] = decide(signal, EXAMPLE_POLICY, workspaces)
    assert isinstance(decision, Deploy)
    return decision.id, decision.plan.deployment, dict(decision.plan.tags)


def squat_deployment(azure: AzureWorld, name: str, tags: dict[str, str]) -> None:
    """The workspace user creates a deployment ``name`` on the endpoint (a copy of the live one)."""
    theirs = workspace_user(azure)
    live = theirs.online_deployments.get("blue", endpoint_name=ENDPOINT)
    live.name, live.tags, live.data_collector = name, tags, None
    theirs.online_deployments.begin_create_or_update(live, skip_script_validation=True)
    assert azure.arm.deployments[(ENDPOINT, name)]["systemData"]["createdBy"] == USER_UPN
    azure.provisioned()  # their deployment is created (the endpoint takes the next write)


def test_a_deployment_someone_else_created_under_the_candidates_name_is_not_adopted(azure: AzureWorld) -> None:
    """The workspace user learned the candidate deployment's name and created a deployment of that name
    on the endpoint first, with the decision's tags. The service must not adopt it (the rollout would
    move production traffic to it): a failed decision naming them, nothing registered or moved."""
    raw = azure.finished_run(r2="0.61")
    decision, planned, tags = public_deploy_plan(raw)
    name = deployment_name(JOB_NAME_KEY.encode(), planned, decision)  # leaked: it takes the key
    squat_deployment(azure, name, tags)
    puts = len(azure.arm.requests_to("PUT", r"^onlineEndpoints/"))

    [rec] = azure.deliver(raw).decisions
    assert (rec.action, rec.outcome) == ("deploy", "failed"), rec.reason
    assert f"deployment {ENDPOINT}/{name} already exists" in rec.reason and USER_UPN in rec.reason
    assert "adopted" not in rec.details
    assert len(azure.arm.requests_to("PUT", r"^onlineEndpoints/")) == puts  # nothing created, no traffic moved
    assert azure.arm.requests_to("PUT", r"^models/") == []  # nor a version registered for it
    assert azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {"blue": 100}
    assert "rollout" not in azure.ledger.get_model(MODEL).flights


def test_the_candidate_deployment_name_cannot_be_computed_from_the_run_without_the_key(azure: AzureWorld) -> None:
    """The deployment name the plan derives from the run id is public; the service deploys under a
    keyed one, so a deployment created at the public name is in nobody's way."""
    raw = azure.finished_run(r2="0.61")
    decision, planned, tags = public_deploy_plan(raw)
    squat_deployment(azure, planned, tags)

    [rec] = azure.deliver(raw).decisions
    assert (rec.action, rec.outcome, rec.details.get("adopted")) == ("deploy", "submitted", None), rec.reason
    name = rec.details["rendered"]["deployment"]
    assert name != planned and name == deployment_name(JOB_NAME_KEY.encode(), planned, decision)
    assert azure.arm.deployments[(ENDPOINT, name)]["systemData"]["createdBy"] == APP_CLIENT_ID


def test_a_model_version_someone_else_tagged_with_the_deploy_decision_is_not_taken_for_the_candidate(
    azure: AzureWorld,
) -> None:
    """The deploy decision's id is a digest of the run id, so anyone can tag a version of the model with
    it before the service registers the candidate: that version is not the one the service registered
    on an earlier delivery. The service registers its own from the run and deploys that."""
    raw = azure.finished_run(r2="0.61")
    _, _, tags = public_deploy_plan(raw)
    theirs = workspace_user(azure)
    azure.arm.add_job("mallory-model-run", experiment="mallory-sandbox")
    forged = Model(name=MODEL, path="azureml://jobs/mallory-model-run/outputs/model", type="custom_model", tags=tags)
    registered = theirs.models.create_or_update(forged)
    assert azure.arm.models[(MODEL, str(registered.version))]["systemData"]["createdBy"] == USER_UPN

    [rec] = azure.deliver(raw).decisions
    assert (rec.action, rec.outcome) == ("deploy", "submitted"), rec.reason
    [create] = azure.arm.requests_to("PUT", r"^onlineEndpoints/")
    served = create.body["properties"]["model"]
    assert served != azure.arm.arm_id("models", MODEL, "versions", str(registered.version))
    assert azure.arm.models[(MODEL, served.rsplit("/", 1)[1])]["systemData"]["createdBy"] == APP_CLIENT_ID


@pytest.mark.both_ledgers
def test_a_deploy_redelivered_after_the_key_is_rotated_adopts_the_deployment_its_reservation_named(
    azure: AzureWorld,
) -> None:
    raw = azure.finished_run(r2="0.61")
    with pytest.raises(WorkerDied):  # registered and started the candidate, then died before recording it
        azure.deliver(raw, azure.new_worker(DiesAfterActing(azure.actions)))
    started = [d for (e, d) in azure.arm.deployments if d != "blue"]
    assert len(started) == 1

    azure.now.advance(minutes=2)
    rotated = azure.new_worker(job_name_key=b"a-new-key-after-rotation-0123456789abcdef")
    [rec] = azure.deliver(raw, rotated).decisions
    assert (rec.outcome, rec.details.get("adopted")) == ("submitted", True), rec.reason
    assert rec.details["rendered"]["deployment"] == started[0]
    assert [d for (e, d) in azure.arm.deployments if d != "blue"] == started


def test_retrain_explain_renders_the_deployment_name_the_service_would_deploy_under(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """explain goes through the executor's preview, so it names the candidate as a delivery does (it
    showed the plan's public name, a deployment the service would never create)."""
    from function_app.cli import main as cli
    from tests.conftest import REPO

    monkeypatch.setenv("RETRAIN_SQLITE_PATH", str(tmp_path / "ledger.db"))
    monkeypatch.setenv("RETRAIN_JOB_NAME_KEY", JOB_NAME_KEY)
    assert cli(["explain", str(REPO / "examples" / "events" / "retrain-run-completed.eventgrid.json")]) == 0
    out = capsys.readouterr().out
    decision = out.split("decide  deploy model=", 1)[1].split("id=", 1)[1].split()[0]
    rendered = json.loads(out.split("render  ", 1)[1].split("\n\n", 1)[0])
    planned = json.loads((REPO / "examples" / "events" / "retrain-run-completed.eventgrid.json").read_text())
    raw = planned[0] if isinstance(planned, list) else planned
    workspaces = frozenset({workspace_key(str(raw["topic"]))})
    [d] = decide(to_signal(envelope_from_dict(raw), workspaces), EXAMPLE_POLICY, workspaces)
    assert isinstance(d, Deploy) and d.id == decision
    assert rendered["deployment"] == deployment_name(JOB_NAME_KEY.encode(), d.plan.deployment, decision)
    assert rendered["deployment"] != d.plan.deployment
