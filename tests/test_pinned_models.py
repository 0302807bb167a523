"""A retrain's model input read through ``@latest`` is pinned to a version before anything acts on it, as its data is
(handlers/pins.py, docs/policy.md "What `@latest` means"; tests/test_pinned_data.py for the data). A person with a
workspace account registers a poisoned version of the base model a pipeline fine-tunes (a ``custom_model`` input
reading ``azureml:diabetes-base@latest``), waits for a retrain that reads it (a drift breach starts it: nobody asked
for it, so no requester is compared), then approves or promotes what follows. The service reads which version is
latest through the real Azure ML SDK (``models.get(name, label="latest")``: the model's versions listed newest
created first, one) from the fake ARM, submits the job with that version, records it, and compares its creator (the
version's ``systemData``) with the approver and the promoter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from function_app import runtime
from function_app.adapters.dryrun import DryRunActions
from handlers.errors import PermanentError
from handlers.records import iso
from tests.approving import ADA_UPN, CAROL_TOKEN, FOUR_EYES, Watching, promotion_refused_to_ada
from tests.azure_world import DRIFT_SAMPLE, AzureWorld, WorkerDied, in_workspace
from tests.builders import ADA, ADA_TOKEN, BOB, EXAMPLE_POLICY, MODEL, signed, training_plan, with_retrain
from tests.crashes import DiesAfterActing
from tests.ledgers import LedgerSpec
from tests.world import World

BASE, INPUT = "diabetes-base", "base_model"  # the base model the pipeline fine-tunes, and its input
LATEST = f"azureml:{BASE}@latest"


def reading_the_base_model(policy: Any = EXAMPLE_POLICY) -> Any:
    """``policy`` with the example model's retrain reading its base model through @latest (a custom model input)."""
    inputs = policy.model_dump()["models"][MODEL]["retrain"]["inputs"]
    return with_retrain({"inputs": {**inputs, INPUT: {"type": "custom_model", "value": LATEST}}}, policy=policy)


def takes_a_base_model(azure: AzureWorld) -> None:
    """The world's pipeline takes a base model, version 1 of which was registered long ago (no creator recorded), and
    its policy reads the base model's latest version."""
    azure.arm.components[("diabetes-retrain", "3")]["properties"]["componentSpec"]["inputs"][INPUT] = {
        "type": "custom_model"
    }
    azure.arm.add_model(BASE, "1")
    azure.policy = reading_the_base_model(azure.policy)
    azure.worker = azure.new_worker()


def poisoned(watching: Watching) -> None:
    """Watching's world takes a base model; Ada registers version 2 of it now (the app serves the new policy)."""
    takes_a_base_model(watching.azure)
    runtime.set_retrainer(watching.azure.worker)
    watching.azure.now.advance(minutes=1)
    watching.azure.arm.add_model(BASE, "2", created=iso(watching.azure.now.now), created_by=ADA_TOKEN)


def submitted_base(azure: AzureWorld) -> list[str]:
    """The base model of each job the fake ARM accepted, as it received it."""
    puts = [c for c in azure.arm.job_puts if c.status in (200, 201)]
    return [c.body["properties"]["inputs"][INPUT]["uri"] for c in puts]


def uri_of(azure: AzureWorld, version: str) -> str:
    """A model version as a job's input names it on the wire (the SDK sends the version's resource id)."""
    return azure.arm.arm_id("models", BASE, "versions", version)


def drift(azure: AzureWorld) -> Any:
    """A drift breach of the model (a legacy drift event): its retrain reads the base model through @latest."""
    [retrain] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    return retrain


def test_a_retrain_reading_the_latest_base_model_is_submitted_with_the_version_azure_ml_names_latest(
    azure: AzureWorld,
) -> None:
    """Latest is the most recently created version, whatever it is named: version 9, registered long ago, is not."""
    takes_a_base_model(azure)
    azure.arm.add_model(BASE, "9")
    azure.now.advance(minutes=1)
    azure.arm.add_model(BASE, "2", created=iso(azure.now.now), created_by=CAROL_TOKEN)

    rec = drift(azure)

    assert rec.outcome == "submitted", rec.reason
    assert rec.details["rendered"]["inputs"][INPUT] == {
        "type": "custom_model",
        "value": f"azureml:{BASE}:2",
        "from": "policy",
        "pinned_from": LATEST,
    }
    assert submitted_base(azure) == [uri_of(azure, "2")]
    [listed] = azure.arm.requests_to("GET", rf"^models/{BASE}/versions$")  # the SDK's one read of "latest"
    assert (listed.query.get("$orderBy"), listed.query.get("$top")) == ("createdtime desc", "1")


def test_who_registered_the_latest_base_model_version_cannot_approve_the_deploy_of_a_retrain_that_read_it(
    opened_with: Any,
) -> None:
    watching = opened_with(deploy=FOUR_EYES, watch=False)
    poisoned(watching)
    retrain = drift(watching.azure)
    assert retrain.outcome == "submitted", retrain.reason
    assert submitted_base(watching.azure) == [uri_of(watching.azure, "2")]
    deploy = watching.candidate(retrain)
    assert (deploy.action, deploy.outcome) == ("deploy", "pending"), deploy.reason

    status, own = watching.post(f"/api/decisions/{deploy.id}/approve", {"reason": "lgtm"}, signed(ADA, ADA_UPN))

    assert status == 403 and watching.deployments_put() == 0, own
    assert f"created model version {BASE}:2" in own["error"], own
    assert f"the model input '{INPUT}'" in own["error"] and retrain.id in own["error"], own
    status, done = watching.post(f"/api/decisions/{deploy.id}/approve", {"reason": "checked"}, signed(BOB, "bob@c"))
    assert status == 202 and watching.deployments_put() == 1, done
    [model] = [c for c in done["details"]["approval"]["creators"] if "model" in c]
    assert model["model"] == f"{BASE}:2" and model["compared"] == "principal name", model


def test_who_registered_the_latest_base_model_version_cannot_approve_the_retrain_and_what_was_reviewed_is_trained(
    opened_with: Any,
) -> None:
    """The retrain waits with its base model pinned; Ada may not approve it. Carol registers a newer version while it
    waits; Bob approves what he reviewed, and that version is what the job fine-tunes."""
    watching = opened_with(retrain=FOUR_EYES, watch=False)
    poisoned(watching)
    retrain = drift(watching.azure)
    assert retrain.outcome == "pending", retrain.reason
    assert retrain.details["rendered"]["inputs"][INPUT]["value"] == f"azureml:{BASE}:2"

    status, own = watching.post(f"/api/decisions/{retrain.id}/approve", {"reason": "go"}, signed(ADA, ADA_UPN))

    assert status == 403 and f"created model version {BASE}:2" in own["error"], own
    assert watching.azure.arm.job_puts == []
    watching.azure.now.advance(minutes=10)
    watching.azure.arm.add_model(BASE, "3", created=iso(watching.azure.now.now), created_by=CAROL_TOKEN)
    status, done = watching.post(f"/api/decisions/{retrain.id}/approve", {"reason": "checked"}, signed(BOB, "bob@c"))
    assert status == 202 and done["outcome"] == "submitted", done
    assert submitted_base(watching.azure) == [uri_of(watching.azure, "2")]


def test_who_registered_the_latest_base_model_version_cannot_promote_the_rollout_of_its_candidate(
    opened_with: Any,
) -> None:
    watching = opened_with(deploy={"required": False, "promote": True}, watch=False)
    poisoned(watching)
    deploy = watching.candidate(drift(watching.azure))
    assert (deploy.action, deploy.outcome) == ("deploy", "submitted"), deploy.reason

    promoted = promotion_refused_to_ada(watching, deploy, f"{BASE}:2", "model version")

    assert f"{BASE}:2" in [c.get("model") for c in promoted["details"]["approval"]["creators"]]


@pytest.mark.both_ledgers
def test_a_retrain_resumed_after_its_job_was_submitted_records_the_base_model_version_the_job_reads(
    opened_with: Any, ledger_spec: LedgerSpec
) -> None:
    """The worker submits the job with Ada's version and dies before recording anything; Carol registers a newer
    one. The redelivery adopts the job: its record names Ada's version, and four eyes refuse its deploy to Ada."""
    watching = opened_with(deploy=FOUR_EYES, watch=False, spec=ledger_spec)
    azure, raw = watching.azure, in_workspace(DRIFT_SAMPLE)
    poisoned(watching)
    with pytest.raises(WorkerDied):
        azure.deliver(raw, azure.new_worker(DiesAfterActing(azure.actions)))
    azure.now.advance(minutes=1)
    azure.arm.add_model(BASE, "3", created=iso(azure.now.now), created_by=CAROL_TOKEN)
    azure.now.advance(minutes=2)  # past the dead worker's lease

    [retrain] = azure.deliver(raw, azure.new_worker()).decisions

    assert (retrain.outcome, retrain.details["adopted"]) == ("submitted", True), retrain.reason
    assert retrain.details["rendered"]["inputs"][INPUT]["value"] == f"azureml:{BASE}:2"
    assert submitted_base(azure) == [uri_of(azure, "2")]
    deploy = watching.candidate(retrain)
    status, own = watching.post(f"/api/decisions/{deploy.id}/approve", {"reason": "mine"}, signed(ADA, ADA_UPN))
    assert status == 403 and f"created model version {BASE}:2" in own["error"], own


def test_a_retrain_whose_latest_base_model_does_not_exist_fails_naming_the_input_and_the_fix(
    azure: AzureWorld,
) -> None:
    takes_a_base_model(azure)
    del azure.arm.models[(BASE, "1")]

    rec = drift(azure)

    assert rec.outcome == "failed", rec.reason
    assert f"input {INPUT!r}" in rec.reason and f"no model {BASE!r}" in rec.reason, rec.reason
    assert "register a version of it, or fix models.<model>.retrain.inputs" in rec.reason, rec.reason
    assert azure.arm.job_puts == []


def test_a_model_input_that_was_not_pinned_is_refused_by_the_azure_ml_backend(azure: AzureWorld) -> None:
    with pytest.raises(PermanentError, match="an asset's latest version, which was not pinned"):
        azure.actions.submit_retrain(training_plan("custom_model", LATEST))
    assert azure.arm.writes() == []


def test_the_dry_run_backend_says_it_did_not_pin_the_latest_base_model(tmp_path: Path) -> None:
    world = World(
        LedgerSpec("sqlite", str(tmp_path / "ledger.db")), policy=reading_the_base_model(), actions=DryRunActions()
    )
    sample = Path(__file__).resolve().parent.parent / "examples" / "events" / "monitor-breach.eventgrid.json"

    [rec] = world.deliver(json.loads(sample.read_text())[0]).decisions

    assert rec.outcome == "planned", rec.reason
    base = rec.details["rendered"]["inputs"][INPUT]
    assert base["value"] == LATEST and "pinned_from" not in base
    assert "reads no workspace" in base["not_pinned"], base
