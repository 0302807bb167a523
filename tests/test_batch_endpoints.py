"""Batch endpoints (``deploy.batch_endpoint``), end to end with the real Azure ML SDK against the fake
ARM's batch endpoints (tests/fake_batch.py): a finished retraining run's candidate becomes a batch
deployment named after its decision, the reconciler switches the endpoint's default deployment to it
once it is provisioned, a worse candidate is a recorded skip, an operator's rollback (the HTTP API)
switches the default back, the demoted deployment is retired after ``retire_after``, and a worker that
dies between the steps leaves what the next pass finishes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from function_app import runtime
from function_app.localhost import Host
from handlers.decisions import decide
from handlers.envelopes import envelope_from_dict, to_signal, workspace_key
from handlers.errors import PolicyError
from handlers.jobnames import deployment_name
from handlers.plans import Deploy
from handlers.policy_file import parse_policy
from tests.azure_world import JOB_NAME_KEY, MODEL, WORKSPACE_ID, AzureWorld
from tests.batch_world import BATCH, Batch, batch_policy
from tests.conftest import REPO, Client
from tests.crashes import DiesAfterActing, WorkerDied
from tests.fake_arm_common import CREATED, system_data
from tests.fake_http import USER_CLAIMS, USER_UPN
from tests.ledgers import LedgerSpec


@pytest.fixture
def batch(ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Batch]:
    monkeypatch.chdir(tmp_path)
    world = AzureWorld(tmp_path, ledger_spec, policy=batch_policy())
    yield Batch(world)
    runtime.set_retrainer(None)
    world.close()
    assert world.arm.unexpected == []


def test_a_better_candidate_becomes_a_batch_deployment_then_the_endpoint_s_default(batch: Batch) -> None:
    azure = batch.azure
    deploy = batch.candidate(r2="0.61")
    assert deploy.outcome == "submitted", deploy.reason
    name = str(deploy.details["rendered"]["deployment"])
    assert deploy.job is not None and deploy.job["name"] == f"{BATCH}/{name}"
    created = azure.arm.batch.deployments[(BATCH, name)]
    assert created["properties"]["model"]["assetId"].endswith(f"/models/{MODEL}/versions/4")
    assert created["properties"]["compute"].endswith("/computes/cpu-cluster")  # copied from the default
    assert created["tags"]["retrain_decision"] == deploy.id and batch.default() == "nightly"

    assert batch.state() == "provisioning"  # minutes on the fake clock; nothing switched meanwhile
    azure.provisioned()
    assert batch.state() == "promoted"
    assert batch.default() == name and not batch.in_flight()
    [promote] = batch.records("promote")
    assert promote.details["demoted"] == ["nightly"] and promote.details["traffic"] == {name: 100}
    assert "nightly -> " + name in promote.reason
    assert azure.arm.refused == []  # the custom role grants every batch call


def test_a_worse_candidate_is_a_recorded_skip_and_the_default_stays(batch: Batch) -> None:
    deploy = batch.candidate(r2="0.40")
    assert deploy.outcome == "skipped" and "0.4" in deploy.reason
    assert batch.azure.arm.batch.deployments.keys() == {(BATCH, "nightly")}
    assert batch.default() == "nightly" and not batch.in_flight()


def promoted(batch: Batch) -> str:
    deploy = batch.candidate(r2="0.61")
    batch.azure.provisioned()
    assert batch.state() == "promoted"
    return str(deploy.details["rendered"]["deployment"])


def test_an_operator_s_rollback_through_the_api_switches_the_default_back(batch: Batch) -> None:
    import main

    name = promoted(batch)
    batch.azure.provisioned()  # the endpoint's update is done
    runtime.set_retrainer(batch.azure.worker)
    client = Client(Host(main.app))
    status, _, rolled = client.call("POST", f"/api/models/{MODEL}/rollback", {"reason": "scores look off"})
    assert status == 202, rolled  # accepted: the switch is a long-running operation
    assert rolled["action"] == "rollback" and rolled["outcome"] == "submitted"
    assert batch.default() == "nightly"
    assert rolled["details"]["traffic"] == {"nightly": 100} and name in rolled["reason"]
    status, _, models = client.call("GET", "/api/models")
    [view] = [m for m in models["models"] if m["model"] == MODEL] if isinstance(models, dict) else models
    assert view["batch_endpoint"] == {"name": BATCH, "default": "nightly"}


def test_policy_validation_names_the_key_and_the_fix_for_batch_endpoints() -> None:
    raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
    deploy = raw["models"][MODEL]["deploy"]
    deploy["batch_endpoint"] = {"name": BATCH}
    with pytest.raises(PolicyError, match=r"name one endpoint.*not both"):
        parse_policy(yaml.safe_dump(raw))
    del deploy["endpoint"]
    with pytest.raises(PolicyError, match=r"batch_endpoint: rollout\.guards.*remove them"):
        parse_policy(yaml.safe_dump(raw))
    deploy["rollout"] = {"steps": [100]}
    deploy["batch_endpoint"] = {"name": "9-bad"}
    with pytest.raises(PolicyError, match=r"batch_endpoint\.name.*'9-bad' is not a valid batch endpoint name"):
        parse_policy(yaml.safe_dump(raw))
    deploy["batch_endpoint"] = {"name": BATCH}
    assert parse_policy(yaml.safe_dump(raw)).models[MODEL].deploy.target == BATCH  # type: ignore[union-attr]


def test_the_demoted_batch_deployment_is_retired_after_retire_after(batch: Batch) -> None:
    azure = batch.azure
    name = promoted(batch)
    azure.provisioned()
    azure.now.now = azure.now.now + timedelta(hours=25)  # the example policy's retire_after: 24h
    report = azure.new_worker().reconcile()
    [retired] = report.retired
    assert retired.outcome == "submitted" and retired.details["deployment"] == "nightly"
    azure.provisioned()
    assert azure.arm.batch.deployments.keys() == {(BATCH, name)}  # the default is never deleted


def test_a_deployment_that_fails_to_provision_is_rolled_back_and_the_default_never_moves(batch: Batch) -> None:
    deploy = batch.candidate(r2="0.61")
    name = str(deploy.details["rendered"]["deployment"])
    batch.azure.arm.batch.provision(BATCH, name, "Failed")
    assert batch.state() == "rolled_back"
    [rollback] = batch.records("rollback")
    assert "ended provisioning Failed" in rollback.reason and rollback.details["provisioning"] == "Failed"
    assert batch.default() == "nightly" and not batch.in_flight()


@pytest.mark.parametrize("ledger_spec", ["sqlite", "table"], indirect=True)
def test_a_worker_that_dies_after_creating_the_batch_deployment_is_finished_by_the_reconciler(batch: Batch) -> None:
    azure = batch.azure
    with pytest.raises(WorkerDied):
        azure.deliver(azure.finished_run(r2="0.61"), worker=azure.new_worker(actions=DiesAfterActing(azure.actions)))
    [(_, name)] = [k for k in azure.arm.batch.deployments if k[1] != "nightly"]
    azure.now.now = azure.now.now + timedelta(minutes=2)  # past the reservation's lease
    report = azure.new_worker().reconcile()
    [resumed] = report.resumed
    assert resumed.outcome == "submitted" and resumed.details.get("adopted") is True  # the same deployment
    assert len(azure.arm.batch.deployments) == 2
    azure.provisioned()
    assert batch.state() == "promoted" and batch.default() == name


@pytest.mark.parametrize("ledger_spec", ["sqlite", "table"], indirect=True)
def test_a_worker_that_dies_after_switching_the_default_is_finished_by_the_next_pass(batch: Batch) -> None:
    azure = batch.azure
    deploy = batch.candidate(r2="0.61")
    name = str(deploy.details["rendered"]["deployment"])
    azure.provisioned()
    batch.switch_dies_then_the_next_pass_finishes(name)


def test_a_frozen_promotion_holds_the_switch_once_and_unfreezing_lets_it_go_on(batch: Batch) -> None:
    import main

    azure = batch.azure
    deploy = batch.candidate(r2="0.61")
    name = str(deploy.details["rendered"]["deployment"])
    runtime.set_retrainer(azure.worker)
    client = Client(Host(main.app))
    status, _, out = client.call("POST", "/api/freeze", {"reason": "quarter close", "actions": ["promote"]})
    assert status == 200, out
    azure.provisioned()
    assert batch.state() == "held" and batch.default() == "nightly"
    [hold] = [r for r in batch.records("rollout") if "frozen" in r.reason]
    assert hold.outcome == "skipped" and "frozen by the stop switch" in hold.reason
    assert batch.state() == "frozen"  # the next pass: held still, no second record
    assert [r.id for r in batch.records("rollout") if "frozen" in r.reason] == [hold.id]

    status, _, out = client.call("POST", "/api/unfreeze", {"reason": "closed"})
    assert status == 200, out
    assert batch.state() == "promoted" and batch.default() == name


def test_a_batch_deployment_someone_else_created_under_the_candidate_s_name_is_not_adopted(batch: Batch) -> None:
    """A workspace user who learned the candidate's keyed name created a batch deployment of it first, with
    the decision's tags: the service does not adopt it (the switch would make it the endpoint's default)."""
    azure = batch.azure
    raw = azure.finished_run(r2="0.61")
    workspaces = frozenset({workspace_key(WORKSPACE_ID)})
    [decision] = decide(to_signal(envelope_from_dict(raw), workspaces), azure.policy, workspaces)
    assert isinstance(decision, Deploy)
    name = deployment_name(JOB_NAME_KEY.encode(), decision.plan.deployment, decision.id)  # leaked: it takes the key
    azure.arm.batch.add_deployment(BATCH, name, model=(MODEL, "3"))
    theirs = azure.arm.batch.deployments[(BATCH, name)]
    theirs["tags"], theirs["systemData"] = dict(decision.plan.tags), system_data(USER_CLAIMS, CREATED)

    [rec] = azure.deliver(raw).decisions
    assert (rec.action, rec.outcome) == ("deploy", "failed"), rec.reason
    assert f"batch deployment {BATCH}/{name} already exists" in rec.reason and USER_UPN in rec.reason
    assert "the default is not switched" in rec.reason and "adopted" not in rec.details
    assert azure.arm.requests_to("PUT", r"^models/") == [] and batch.default() == "nightly" and not batch.in_flight()
