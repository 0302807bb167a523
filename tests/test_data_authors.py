"""Four eyes over what a retrain comes from (docs/security.md, "What was attacked"): a person with a workspace
account registers a new version of a data asset the policy watches (`retrain.on.data.assets`), the service
retrains on it, and the same person approves what follows: the retrain, the deploy of its run, or the promotion of
its rollout. The version's creator is read through the real Azure ML SDK (Data Versions - Get, its ``systemData``)
from the fake ARM, and compared with the approver as a run's creator is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from function_app import runtime
from function_app.localhost import Host
from handlers.policy import Policy
from handlers.records import DecisionRecord, iso
from tests.approving import Approving
from tests.azure_world import DATASET, MODEL, AzureWorld
from tests.builders import ADA, ADA_TOKEN, BOB, run_event, signed, signed_in
from tests.conftest import REPO, Client
from tests.fake_arm_common import job_system_data
from tests.ledgers import LedgerSpec

FOUR_EYES = {"required": True, "expires": "24h", "four_eyes": True}
POISONED = "3"  # the version Ada registers
ADA_UPN = str(ADA_TOKEN["upn"])  # how App Service names her when she signs in


class Watching(Approving):
    """The example policy watching the data asset the model trains on, with the approvals given."""

    def __init__(self, tmp_path: Path, retrain: dict[str, Any] | None, deploy: dict[str, Any] | None) -> None:
        import main

        raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
        model = raw["models"][MODEL]
        model["retrain"]["on"] = {"data": {"assets": [DATASET]}}
        for section, approval in (("retrain", retrain), ("deploy", deploy)):
            if approval is not None:
                model[section]["approval"] = approval
        self.azure = AzureWorld(
            tmp_path, LedgerSpec("sqlite", str(tmp_path / "l.db")), policy=Policy.model_validate(raw)
        )
        runtime.set_retrainer(self.azure.worker)
        self.client = Client(Host(main.app))

    def poisoned(self, by: dict[str, Any] = ADA_TOKEN) -> DecisionRecord:
        """Ada registers a new version of the watched asset; the reconciler's next pass starts its retrain."""
        world = self.azure
        world.reconcile()  # the first look: where watching starts
        world.arm.add_data(DATASET, POISONED, created=iso(world.now.now), created_by=by)
        world.now.advance(minutes=5)
        [started] = world.reconcile().started
        assert f"{DATASET}:{POISONED}" in started.reason, started.reason
        return started

    def candidate(self, retrain: DecisionRecord) -> DecisionRecord:
        """The retrain's run completes and passes the gate: its deploy, as the run's event decides it."""
        arm, job = self.azure.arm, str(retrain.job["name"])
        arm.set_job_status(job, "Completed")
        arm.add_step(job, "evaluate_model", metrics={"r2_score": 0.61})
        event = run_event(run_id=job, tags=arm.jobs[job]["properties"]["tags"], topic=self.azure.settings.workspace_id)
        [deploy] = self.azure.deliver(event).decisions
        return deploy


@pytest.fixture
def opened_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.chdir(tmp_path)
    signed_in(monkeypatch)
    worlds: list[Watching] = []

    def open_one(retrain: dict[str, Any] | None = None, deploy: dict[str, Any] | None = None) -> Watching:
        worlds.append(Watching(tmp_path, retrain, deploy))
        return worlds[-1]

    yield open_one
    runtime.set_retrainer(None)
    for world in worlds:
        world.azure.close()
        assert world.azure.arm.unexpected == []


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
    from tests.test_operate import Operated

    watching = opened_with(deploy={"required": False, "promote": True})
    deploy = watching.candidate(watching.poisoned())
    assert (deploy.action, deploy.outcome) == ("deploy", "submitted"), deploy.reason
    operated = Operated.of(watching.azure, watching.client, deploy)
    operated.hold()
    held, path = dict(operated.traffic()), f"/api/models/{MODEL}/promote"

    status, own = watching.post(path, {"reason": "mine"}, signed(ADA, ADA_UPN))

    assert status == 403 and f"created data asset version {DATASET}:{POISONED}" in own["error"], own
    assert operated.traffic() == held
    status, promoted = watching.post(path, {"reason": "canary held"}, signed(BOB, "bob@c"))
    assert status == 202 and operated.traffic() == {operated.name: 100}, promoted
    creators = promoted["details"]["approval"]["creators"]
    assert [c.get("run") or c.get("data") for c in creators] == [
        deploy.details["rendered"]["candidate"]["run_id"],
        f"{DATASET}:{POISONED}",
    ]
