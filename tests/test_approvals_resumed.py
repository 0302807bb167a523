"""Approvals resumed (issue 24): a promote held for approval across passes, an approved deploy whose
worker died, a candidate redelivered after its approval, an approval while the model is frozen."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from function_app import runtime
from function_app.localhost import Host
from handlers.errors import TransientError
from handlers.policy import Policy
from handlers.signals import OPERATOR, Trigger
from tests.approving import DEPLOYMENTS, Approving, approving_post
from tests.azure_world import MODEL, AzureWorld
from tests.builders import ADA, BOB, BOB_CALLER, signed
from tests.conftest import REPO, Client
from tests.ledgers import LedgerSpec


@pytest.mark.both_ledgers
def test_a_promote_held_for_approval_waits_however_many_passes_go_by(
    ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy.approval.promote: the rollout holds before its promotion, recorded once, however many passes
    go by; the operator's promote approves it, not by the caller who asked for the deploy (four eyes)."""
    import main
    from tests.rollouts import BAKE, LAG, Operated

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RETRAIN_APP_SERVICE_AUTH", "true")  # four eyes: signed-in callers
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
    raw["models"][MODEL]["deploy"]["approval"] = {"required": False, "promote": True}
    azure = AzureWorld(tmp_path, ledger_spec, policy=Policy.model_validate(raw))
    try:
        runtime.set_retrainer(azure.worker)
        operated = Operated.__new__(Operated)  # its helpers, on a deploy Ada asked for
        operated.azure, operated.client = azure, Client(Host(main.app))
        azure.arm.add_model(MODEL, "4", tags={"r2_score": "0.61"})
        path = f"/api/models/{MODEL}/"
        status, deploy = approving_post(operated, path + "deploy", {"reason": "v4", "version": "4"}, signed(ADA, "a"))
        assert status == 202 and deploy["outcome"] == "submitted"  # required: false, no approval for the deploy
        operated.name = str(deploy["details"]["rendered"]["deployment"])
        azure.provisioned()
        assert operated.state() == "stepped"

        def healthy_bake() -> str:
            for m in range(10):
                when = operated.started() + timedelta(minutes=m, seconds=30)
                azure.serve(when, operated.name, ok=30)
                azure.serve(when, "blue", ok=30)
            azure.now.now = operated.started() + BAKE + LAG
            return operated.state()

        assert healthy_bake() == "stepped" and operated.traffic()[operated.name] == 50
        assert healthy_bake() == "held" and operated.traffic()[operated.name] == 50
        [hold] = [r for r in operated.records("rollout") if "waits for a person" in r.reason]
        assert "held: waits for approval (deploy.approval.promote" in hold.reason and "frozen" not in hold.reason
        assert f"/api/models/{MODEL}/promote" in hold.reason
        for _ in range(4):  # however many passes: held, recorded once
            azure.now.advance(minutes=15)
            assert operated.state() == "waiting" and operated.traffic()[operated.name] == 50
        assert len([r for r in operated.records("rollout") if "waits for a person" in r.reason]) == 1

        status, own = approving_post(operated, path + "promote", {"reason": "mine"}, signed(ADA, "a"))
        assert status == 403 and "asked for this and may not promote it too" in own["error"]
        assert operated.traffic()[operated.name] == 50

        status, promoted = approving_post(operated, path + "promote", {"reason": "canary held"}, signed(BOB, "b"))

        assert status == 202 and promoted["action"] == "promote" and operated.traffic() == {operated.name: 100}
        assert promoted["trigger"]["caller"]["id"] == BOB
    finally:
        runtime.set_retrainer(None)
        azure.close()


@pytest.mark.both_ledgers
def test_a_worker_that_dies_after_the_approval_deployed_leaves_it_to_the_reconciler_once(
    approving: Approving,
) -> None:
    from tests.crashes import DiesAfterActing, WorkerDied

    rec = approving.pending()
    dying = approving.azure.new_worker(DiesAfterActing(approving.azure.actions))
    trigger = Trigger("http", "a-1", "ManualRequest.approve", BOB_CALLER, channel=OPERATOR)
    with pytest.raises(WorkerDied):
        dying.approve(rec.id, trigger, "go")
    assert approving.deployments_put() == 1 and approving.slot().status == "reserved"

    status, again = approving.post(f"/api/decisions/{rec.id}/approve", {"reason": "did it work?"})
    assert status == 200 and again["outcome"] == "reserved"  # approved already: nothing done again
    approving.azure.now.advance(minutes=2)  # past the lease
    [resumed] = approving.azure.reconcile().resumed

    assert (resumed.id, resumed.outcome) == (rec.id, "submitted")
    assert resumed.details["approval"]["approved_by"] == "bob@c"
    names = {c.path for c in approving.azure.arm.requests_to("PUT", DEPLOYMENTS) if c.status in (200, 201)}
    assert len(names) == 1  # one candidate deployment: the resumed action adopted the one the dead worker started
    assert approving.slot().status == "submitted"


def pending_unfinished(approving: Approving) -> tuple[dict[str, Any], str]:
    """A candidate's RunCompleted whose worker recorded its deploy pending and died before finishing the event:
    the event, and the pending decision's id."""
    from tests.crashes import LedgerThatDies, WorkerDied

    event = approving.azure.finished_run(r2="0.61")
    with pytest.raises(WorkerDied):
        approving.azure.deliver(
            json.loads(json.dumps(event)),
            approving.azure.new_worker(ledger=LedgerThatDies(approving.azure.spec.open(), "confirm")),
        )
    return event, approving.slot().decision


@pytest.mark.both_ledgers
def test_a_candidate_redelivered_after_its_approval_is_deployed_as_approved_once(approving: Approving) -> None:
    """The RunCompleted's worker recorded the deploy pending and died before finishing the event; Bob's
    approval died before deploying. The redelivery deploys it as approved, once, without asking again."""
    from tests.crashes import DiesBeforeActing, WorkerDied

    event, rec = pending_unfinished(approving)
    trigger = Trigger("http", "a-1", "ManualRequest.approve", BOB_CALLER, channel=OPERATOR)
    with pytest.raises(WorkerDied):
        approving.azure.new_worker(DiesBeforeActing(approving.azure.actions)).approve(rec, trigger, "go")
    approving.azure.now.advance(minutes=3)  # past the event's lease: Event Grid redelivers it

    [again] = approving.azure.deliver(event).decisions

    assert (again.id, again.outcome) == (rec, "submitted") and approving.deployments_put() == 1
    assert again.details["approval"]["approved_by"] == "bob@c" and again.reason.count("waits for approval") == 1
    outbox = approving.azure.ledger.notifications(dead=False, limit=50)
    assert [e.notification.data["id"] for e in outbox if e.notification.type.endswith(".pending")] == [rec]


@pytest.mark.both_ledgers
def test_a_redelivery_that_finds_an_approved_deploy_being_carried_out_waits_out_its_lease(
    approving: Approving,
) -> None:
    """Bob's approval took the slot and its worker is still deploying (slow, not dead) when the candidate's
    RunCompleted comes again (its first worker died before finishing the event): the redelivery must not
    deploy beside it. It is asked again later (transient); past the lease it carries the approval out once,
    and a second resumer inside the new lease waits too."""
    from tests.crashes import DiesBeforeActing, WorkerDied

    event, rec = pending_unfinished(approving)
    approving.azure.now.advance(minutes=2)  # Bob approves later: the event's claim has run out by now
    trigger = Trigger("http", "a-1", "ManualRequest.approve", BOB_CALLER, channel=OPERATOR)
    with pytest.raises(WorkerDied):  # stands for a worker still acting: its reservation is inside the lease
        approving.azure.new_worker(DiesBeforeActing(approving.azure.actions)).approve(rec, trigger, "go")
    approving.azure.now.advance(seconds=30)

    with pytest.raises(TransientError, match="being carried out"):
        approving.azure.deliver(json.loads(json.dumps(event)))
    assert approving.deployments_put() == 0 and approving.slot().status == "reserved"
    assert approving.azure.reconcile().resumed == [] and approving.deployments_put() == 0

    approving.azure.now.advance(seconds=31)  # the approval's reservation is past its lease: its worker is gone
    with pytest.raises(WorkerDied):  # a redelivery takes it over (marked on the slot) and is still at it
        approving.azure.deliver(
            json.loads(json.dumps(event)), approving.azure.new_worker(DiesBeforeActing(approving.azure.actions))
        )
    other = {**json.loads(json.dumps(event)), "id": "another-subscription-1"}  # the same run, told again
    with pytest.raises(TransientError, match="being carried out"):  # ... so another waits a lease again
        approving.azure.deliver(other)
    assert approving.deployments_put() == 0
    approving.azure.now.advance(seconds=61)
    [again] = approving.azure.deliver(json.loads(json.dumps(event))).decisions
    assert (again.id, again.outcome) == (rec, "submitted") and approving.deployments_put() == 1
    assert again.details["approval"]["approved_by"] == "bob@c"


def test_an_approval_while_the_model_is_frozen_is_refused_and_waits_for_the_unfreeze(approving: Approving) -> None:
    """A freeze of deploys holds a pending deploy too: approving it is a 409 naming the freeze, nothing is
    deployed and it stays pending; once unfrozen the same approval carries it out."""
    rec = approving.pending()
    status, _ = approving.post("/api/freeze", {"reason": "incident 4711", "actions": ["deploy"]})
    assert status == 200

    status, refused = approving.post(f"/api/decisions/{rec.id}/approve", {"reason": "go"})

    assert status == 409 and "frozen by the stop switch" in refused["error"] and "incident 4711" in refused["error"]
    assert "approve it once the freeze is lifted" in refused["error"]
    assert approving.slot().status == "pending" and approving.deployments_put() == 0
    status, _ = approving.post("/api/unfreeze", {"reason": "resolved"})
    assert status == 200
    status, done = approving.post(f"/api/decisions/{rec.id}/approve", {"reason": "go"})
    assert status == 202 and done["outcome"] == "submitted" and approving.deployments_put() == 1
