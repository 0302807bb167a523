"""Four eyes over what a retrain comes from (docs/security.md, "What was attacked"): a person with a workspace
account registers a new version of a data asset the policy watches (`retrain.on.data.assets`), the service
retrains on it, and the same person approves what follows: the retrain, the deploy of its run, or the promotion of
its rollout. The version's creator is read through the real Azure ML SDK (Data Versions - Get, its ``systemData``)
from the fake ARM, and compared with the approver as a run's creator is."""

from __future__ import annotations

from typing import Any

from handlers.records import iso
from tests.approving import ADA_UPN, FOUR_EYES, POISONED, promotion_refused_to_ada
from tests.azure_world import DATASET
from tests.builders import ADA, ADA_TOKEN, BOB, signed
from tests.fake_arm_common import job_system_data


def test_who_registered_the_data_version_cannot_approve_the_deploy_of_the_retrain_it_started(opened_with: Any) -> None:
    """Ada registers poisoned data; the service retrains on it by itself (the retrain's trigger is the reconciler,
    the deploy's the run's event: neither names her) and the candidate waits for approval; she approves it."""
    watching = opened_with(deploy=FOUR_EYES)
    retrain = watching.poisoned()
    assert retrain.outcome == "submitted", retrain.reason
    deploy = watching.candidate(retrain)
    assert (deploy.action, deploy.outcome) == ("deploy", "pending"), deploy.reason

    status, own = watching.post(f"/api/decisions/{deploy.id}/approve", {"reason": "lgtm"}, signed(ADA, ADA_UPN))

    assert status == 403 and watching.deployments_put() == 0, own
    assert f"created data asset version {DATASET}:{POISONED}" in own["error"] and retrain.id in own["error"], own
    assert "principal name" in own["error"]
    status, done = watching.post(f"/api/decisions/{deploy.id}/approve", {"reason": "checked"}, signed(BOB, "bob@c"))
    assert status == 202 and watching.deployments_put() == 1, done
    run, data = done["details"]["approval"]["creators"]  # the candidate run (the service's own), then the data
    assert run["run"] == retrain.job["name"] and run["compared"] == "object id", run
    assert data["data"] == f"{DATASET}:{POISONED}" and data["compared"] == "principal name", data
    assert retrain.id in data["as"]


def test_who_registered_the_data_version_cannot_approve_the_retrain_it_starts(opened_with: Any) -> None:
    watching = opened_with(retrain=FOUR_EYES)
    retrain = watching.poisoned()
    assert retrain.outcome == "pending", retrain.reason

    status, own = watching.post(f"/api/decisions/{retrain.id}/approve", {"reason": "go"}, signed(ADA, ADA_UPN))

    assert status == 403 and f"created data asset version {DATASET}:{POISONED}" in own["error"], own
    assert watching.azure.arm.job_puts == []
    status, done = watching.post(f"/api/decisions/{retrain.id}/approve", {"reason": "checked"}, signed(BOB, "bob@c"))
    assert status == 202 and done["outcome"] == "submitted", done
    [data] = done["details"]["approval"]["creators"]
    assert data == {
        "data": f"{DATASET}:{POISONED}",
        "compared": "principal name",
        "as": "the new data asset version that started this decision",
    }


def test_a_data_version_whose_creator_azure_names_by_display_name_is_approved_saying_it_was_not_compared(
    opened_with: Any,
) -> None:
    """Whether Azure ML names a person in a data version's systemData by principal name (as ARM does) or by
    display name (as it does a job's) is unverified: a display name matches nobody, so the approval goes through,
    its record saying the creator could not be compared."""
    watching = opened_with(retrain=FOUR_EYES)
    retrain = watching.poisoned()
    watching.azure.arm.data[(DATASET, POISONED)]["systemData"] = job_system_data(ADA_TOKEN, iso(watching.azure.now.now))

    status, done = watching.post(f"/api/decisions/{retrain.id}/approve", {"reason": "go"}, signed(ADA, ADA_UPN))

    assert status == 202 and done["outcome"] == "submitted", done
    [data] = done["details"]["approval"]["creators"]
    assert data["created_by"] == "Ada Lovelace" and "no object id or principal name" in data["not_compared"], data


def test_who_registered_the_data_version_cannot_promote_the_rollout_of_its_candidate(opened_with: Any) -> None:
    """No approval of the deploy, but the rollout holds before its promotion for a person (`promote`): the data's
    author may not be that person; the promotion's record says what was compared."""
    watching = opened_with(deploy={"required": False, "promote": True})
    deploy = watching.candidate(watching.poisoned())
    assert (deploy.action, deploy.outcome) == ("deploy", "submitted"), deploy.reason

    promoted = promotion_refused_to_ada(watching, deploy, f"{DATASET}:{POISONED}")

    creators = promoted["details"]["approval"]["creators"]
    assert [c.get("run") or c.get("data") for c in creators] == [
        deploy.details["rendered"]["candidate"]["run_id"],
        f"{DATASET}:{POISONED}",
    ]
