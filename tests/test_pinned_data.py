"""A retrain's data read through ``@latest`` is pinned to a version before anything acts on it (handlers/pins.py,
docs/policy.md "What `@latest` means"; docs/security.md, "What was attacked"). A person with a workspace account
registers a poisoned version of the data the model trains on (``azureml:diabetes-training@latest`` in the example
policy), waits for a retrain that reads ``@latest`` (a drift breach starts it: nobody asked for it, so no requester
is compared), then approves what follows. The service reads which version is latest through the real Azure ML SDK
(``data.get(name, label="latest")``: the asset's container, then the version) from the fake ARM, submits the job
with that version, records it, and compares its creator (the version's ``systemData``) with the approver and the
promoter, as it does the version that started a retrain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from function_app.adapters.dryrun import DryRunActions
from handlers.errors import PermanentError, TransientError
from handlers.records import iso
from tests.approving import ADA_UPN, CAROL_TOKEN, FOUR_EYES, POISONED, Watching, promotion_refused_to_ada
from tests.azure_world import DATASET, DRIFT_SAMPLE, MODEL, AzureWorld, WorkerDied, in_workspace
from tests.builders import ADA, ADA_TOKEN, BOB, CAROL, signed, training_plan, with_retrain
from tests.crashes import DiesAfterActing
from tests.fake_arm_common import job_system_data
from tests.ledgers import LedgerSpec
from tests.world import World

LATEST = f"azureml:{DATASET}@latest"  # the example policy's training data


def uri_of(azure: AzureWorld, version: str) -> str:
    """A data version as a job's input names it on the wire (the SDK sends the version's resource id)."""
    return azure.arm.arm_id("data", DATASET, "versions", version)


def submitted_uris(azure: AzureWorld) -> list[str]:
    """The training data of each job the fake ARM accepted, as it received it."""
    puts = [c for c in azure.arm.job_puts if c.status in (200, 201)]
    return [c.body["properties"]["inputs"]["training_data"]["uri"] for c in puts]


def drift(watching: Watching) -> Any:
    """A drift breach of the model (a legacy drift event): its retrain reads the training data through @latest."""
    [retrain] = watching.azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    return retrain


def test_a_retrain_reading_latest_data_is_submitted_with_the_version_it_pinned_and_records_it(
    azure: AzureWorld,
) -> None:
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions

    assert rec.outcome == "submitted", rec.reason
    assert rec.details["rendered"]["inputs"]["training_data"] == {
        "type": "mltable",
        "value": f"azureml:{DATASET}:2",
        "from": "policy",
        "pinned_from": LATEST,
    }
    assert submitted_uris(azure) == [uri_of(azure, "2")]
    assert len(azure.arm.requests_to("GET", rf"^data/{DATASET}$")) == 1  # its container names the latest version


def test_who_registered_the_latest_data_version_cannot_approve_the_deploy_of_a_retrain_that_read_it(
    opened_with: Any,
) -> None:
    """Ada registers a poisoned version; a drift breach retrains on @latest, which is hers; its candidate waits for
    approval and she approves it. Neither the retrain's trigger nor the deploy's names her."""
    watching = opened_with(deploy=FOUR_EYES, watch=False)
    watching.register(POISONED)
    retrain = drift(watching)
    assert retrain.outcome == "submitted", retrain.reason
    assert submitted_uris(watching.azure) == [uri_of(watching.azure, POISONED)]
    deploy = watching.candidate(retrain)
    assert (deploy.action, deploy.outcome) == ("deploy", "pending"), deploy.reason

    status, own = watching.post(f"/api/decisions/{deploy.id}/approve", {"reason": "lgtm"}, signed(ADA, ADA_UPN))

    assert status == 403 and watching.deployments_put() == 0, own
    assert f"created data asset version {DATASET}:{POISONED}" in own["error"], own
    assert "read as @latest and pinned" in own["error"] and retrain.id in own["error"], own
    assert f"principal name {ADA_UPN.lower()}" in own["error"], own
    status, done = watching.post(f"/api/decisions/{deploy.id}/approve", {"reason": "checked"}, signed(BOB, "bob@c"))
    assert status == 202 and watching.deployments_put() == 1, done
    run, data = done["details"]["approval"]["creators"]  # the candidate run (the service's own), then its data
    assert run["run"] == retrain.job["name"], run
    assert data["data"] == f"{DATASET}:{POISONED}" and data["compared"] == "principal name", data
    assert "'training_data'" in data["as"] and retrain.id in data["as"], data


def test_who_registered_the_latest_data_version_cannot_approve_the_retrain_and_what_was_reviewed_is_trained(
    opened_with: Any,
) -> None:
    """The retrain waits for approval with its data pinned; Ada may not approve it. Carol registers a newer version
    while it waits; Bob approves what he reviewed, and that version is what the job trains on."""
    watching = opened_with(retrain=FOUR_EYES, watch=False)
    watching.register(POISONED)
    retrain = drift(watching)
    assert retrain.outcome == "pending", retrain.reason
    assert retrain.details["rendered"]["inputs"]["training_data"]["value"] == f"azureml:{DATASET}:{POISONED}"

    status, own = watching.post(f"/api/decisions/{retrain.id}/approve", {"reason": "go"}, signed(ADA, ADA_UPN))

    assert status == 403 and f"created data asset version {DATASET}:{POISONED}" in own["error"], own
    assert watching.azure.arm.job_puts == []
    watching.azure.now.advance(minutes=10)
    watching.register("4", by=CAROL_TOKEN)
    status, done = watching.post(f"/api/decisions/{retrain.id}/approve", {"reason": "checked"}, signed(BOB, "bob@c"))
    assert status == 202 and done["outcome"] == "submitted", done
    assert submitted_uris(watching.azure) == [uri_of(watching.azure, POISONED)]
    assert done["details"]["rendered"]["inputs"]["training_data"]["value"] == f"azureml:{DATASET}:{POISONED}"
    [data] = done["details"]["approval"]["creators"]
    assert data["data"] == f"{DATASET}:{POISONED}" and data["compared"] == "principal name", data


def test_who_registered_the_latest_data_version_cannot_promote_the_rollout_of_its_candidate(opened_with: Any) -> None:
    watching = opened_with(deploy={"required": False, "promote": True}, watch=False)
    watching.register(POISONED)
    deploy = watching.candidate(drift(watching))
    assert (deploy.action, deploy.outcome) == ("deploy", "submitted"), deploy.reason

    promoted = promotion_refused_to_ada(watching, deploy, f"{DATASET}:{POISONED}")

    assert f"{DATASET}:{POISONED}" in [c.get("data") for c in promoted["details"]["approval"]["creators"]]


def test_a_pinned_version_whose_creator_azure_names_by_display_name_is_approved_saying_it_was_not_compared(
    opened_with: Any,
) -> None:
    """The version's creator is recorded by a name that is no identity (unverified which Azure ML writes): as for
    the version that starts a retrain, the approval goes through and its record says it was not compared."""
    watching = opened_with(retrain=FOUR_EYES, watch=False)
    watching.register(POISONED)
    watching.azure.arm.data[(DATASET, POISONED)]["systemData"] = job_system_data(ADA_TOKEN, iso(watching.azure.now.now))
    retrain = drift(watching)

    status, done = watching.post(f"/api/decisions/{retrain.id}/approve", {"reason": "go"}, signed(ADA, ADA_UPN))

    assert status == 202 and done["outcome"] == "submitted", done
    [data] = done["details"]["approval"]["creators"]
    assert data["data"] == f"{DATASET}:{POISONED}" and data["created_by"] == "Ada Lovelace", data
    assert "no object id or principal name" in data["not_compared"], data


@pytest.mark.both_ledgers
def test_a_retrain_resumed_after_its_job_was_submitted_keeps_the_version_it_pinned(azure: AzureWorld) -> None:
    """The worker dies after the job's submission, before recording it; a newer version is registered; the
    redelivery adopts the job and records the version the job was submitted with, not the newer one."""
    raw = in_workspace(DRIFT_SAMPLE)
    with pytest.raises(WorkerDied):
        azure.deliver(raw, azure.new_worker(DiesAfterActing(azure.actions)))
    azure.arm.add_data(DATASET, "3", created=iso(azure.now.now))
    with pytest.raises(TransientError):  # while the dead worker's lease runs
        azure.deliver(raw)
    azure.now.advance(minutes=2)

    [rec] = azure.deliver(raw, azure.new_worker()).decisions

    assert (rec.outcome, rec.details["adopted"]) == ("submitted", True), rec.reason
    assert rec.details["rendered"]["inputs"]["training_data"]["value"] == f"azureml:{DATASET}:2"
    assert submitted_uris(azure) == [uri_of(azure, "2")]


@pytest.mark.both_ledgers
def test_a_retrain_resumed_after_its_job_was_submitted_records_the_version_the_job_trains_on_for_four_eyes(
    opened_with: Any, ledger_spec: LedgerSpec
) -> None:
    """Ada registers a version; a drift breach's worker submits the job with it and dies before recording anything;
    Carol registers a newer one. The redelivery pins Carol's again and adopts the job: its record names Ada's, which
    the job trains on, and four eyes refuse the deploy of its run to Ada, not to Carol."""
    watching = opened_with(deploy=FOUR_EYES, watch=False, spec=ledger_spec)
    azure, raw = watching.azure, in_workspace(DRIFT_SAMPLE)
    watching.register(POISONED)
    with pytest.raises(WorkerDied):
        azure.deliver(raw, azure.new_worker(DiesAfterActing(azure.actions)))
    azure.now.advance(minutes=1)
    watching.register("4", by=CAROL_TOKEN)
    azure.now.advance(minutes=2)  # past the dead worker's lease

    [retrain] = azure.deliver(raw, azure.new_worker()).decisions

    assert (retrain.outcome, retrain.details["adopted"]) == ("submitted", True), retrain.reason
    assert retrain.details["rendered"]["inputs"]["training_data"] == {
        "type": "mltable",
        "value": f"azureml:{DATASET}:{POISONED}",
        "from": "policy",
        "pinned_from": LATEST,
    }
    assert submitted_uris(azure) == [uri_of(azure, POISONED)]
    deploy = watching.candidate(retrain)
    approve = f"/api/decisions/{deploy.id}/approve"
    status, own = watching.post(approve, {"reason": "mine"}, signed(ADA, ADA_UPN))
    assert status == 403 and f"created data asset version {DATASET}:{POISONED}" in own["error"], own
    status, done = watching.post(approve, {"reason": "checked"}, signed(CAROL, str(CAROL_TOKEN["upn"])))
    assert status == 202 and watching.deployments_put() == 1, done
    compared = [c.get("run") or c.get("data") for c in done["details"]["approval"]["creators"]]
    assert compared == [retrain.job["name"], f"{DATASET}:{POISONED}"], done["details"]["approval"]


def test_a_retrain_whose_latest_data_asset_does_not_exist_fails_naming_it(azure: AzureWorld) -> None:
    del azure.arm.data[(DATASET, "1")], azure.arm.data[(DATASET, "2")]

    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions

    assert rec.outcome == "failed" and DATASET in rec.reason, rec.reason
    assert azure.arm.job_puts == []


def test_a_data_input_that_was_not_pinned_is_refused_by_the_azure_ml_backend(azure: AzureWorld) -> None:
    plan = training_plan("mltable", LATEST)
    with pytest.raises(PermanentError, match="not pinned to a version before the job's submission"):
        azure.actions.submit_retrain(plan)
    assert azure.arm.writes() == []


def test_the_dry_run_backend_says_it_did_not_pin_latest_data(tmp_path: Path) -> None:
    world = World(LedgerSpec("sqlite", str(tmp_path / "ledger.db")), actions=DryRunActions())
    sample = Path(__file__).resolve().parent.parent / "examples" / "events" / "monitor-breach.eventgrid.json"

    [rec] = world.deliver(json.loads(sample.read_text())[0]).decisions

    assert rec.outcome == "planned", rec.reason
    data = rec.details["rendered"]["inputs"]["training_data"]
    assert data["value"] == LATEST and "pinned_from" not in data
    assert "reads no workspace" in data["not_pinned"], data


def test_a_dry_run_against_the_workspace_shows_the_version_it_would_pin_and_submits_nothing(azure: AzureWorld) -> None:
    rec = azure.manual(dry_run=True)

    assert rec.outcome == "planned", rec.reason
    assert rec.details["rendered"]["inputs"]["training_data"]["value"] == f"azureml:{DATASET}:2"
    assert azure.arm.job_puts == [] and azure.ledger.get_model(MODEL).flights == {}


def test_a_data_input_a_manual_request_overrides_with_latest_is_pinned_too(azure: AzureWorld) -> None:
    azure.policy = with_retrain({"overridable": ["training_data"]})
    azure.worker = azure.new_worker()
    azure.arm.add_data("diabetes-holdout", "5", created=iso(azure.now.now))

    rec = azure.manual(inputs={"training_data": "azureml:diabetes-holdout@latest"})

    assert rec.outcome == "submitted", rec.reason
    assert rec.details["rendered"]["inputs"]["training_data"] == {
        "type": "mltable",
        "value": "azureml:diabetes-holdout:5",
        "from": "request",
        "pinned_from": "azureml:diabetes-holdout@latest",
    }
    [put] = [c for c in azure.arm.job_puts if c.status == 201]
    uri = put.body["properties"]["inputs"]["training_data"]["uri"]
    assert uri == azure.arm.arm_id("data", "diabetes-holdout", "versions", "5")
