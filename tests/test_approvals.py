"""Approvals of deploys (issue 24, its first part): ``deploy.approval`` makes a candidate that passed the
gate wait, recorded ``pending`` and holding its model's rollout slot, until a second caller approves it
(carried out once, also when approve is sent twice, at once, or its worker dies) or rejects it; the
reconciler releases an expired one. End to end through the local host, with the real Azure ML SDK
against the fake ARM."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from function_app import cli
from handlers.errors import NotApplicable, PolicyError, TransientError
from handlers.policy_file import parse_policy
from handlers.records import DecisionRecord
from handlers.signals import OPERATOR, Trigger
from tests.approving import DEPLOYMENTS, Approving, opened
from tests.azure_world import ENDPOINT, MODEL
from tests.builders import ADA, BOB, BOB_CALLER, CAROL, signed, signed_in
from tests.ledgers import LedgerSpec


@pytest.mark.both_ledgers
def test_a_pending_deploy_holds_the_slot_and_is_carried_out_once_when_approved(approving: Approving) -> None:
    rec = approving.pending()

    assert (rec.action, rec.outcome) == ("deploy", "pending") and "waits for approval until" in rec.reason
    assert rec.details["gate"]["passed"] is True and rec.details["rendered"]["endpoint"] == ENDPOINT
    assert rec.details["approval"]["expires"] and rec.details["approval"]["four_eyes"] is True
    assert approving.deployments_put() == 0  # nothing deployed
    slot = approving.slot()
    assert (slot.decision, slot.status) == (rec.id, "pending")
    status, rolled = approving.post(f"/api/models/{MODEL}/rollback", {"reason": "no"})  # the slot is held
    assert status == 409 and f"/api/decisions/{rec.id}/approve" in rolled["error"]
    outbox = approving.azure.ledger.notifications(dead=False, limit=50)
    [note] = [e.notification for e in outbox if e.notification.type.endswith(".pending")]
    assert note.type == "retrain.decision.deploy.pending" and note.data["details"]["gate"]["passed"] is True
    assert note.data["details"]["approval"]["links"]["approve"] == f"/api/decisions/{rec.id}/approve"
    _, _, models = approving.client.call("GET", "/api/models")
    [view] = [m for m in models["models"] if m["model"] == MODEL]
    assert view["state"] == "waiting for approval" and view["in_flight"]["rollout"]["status"] == "pending"
    _, _, listed = approving.client.call("GET", "/api/decisions?outcome=pending")
    assert [d["id"] for d in listed["decisions"]] == [rec.id]
    approving.azure.reconcile()  # a pass leaves it waiting
    assert approving.slot().status == "pending"

    status, done = approving.post(f"/api/decisions/{rec.id}/approve", {"reason": "numbers look right"})

    assert status == 202 and (done["id"], done["outcome"]) == (rec.id, "submitted")
    assert done["details"]["approval"]["approved_by"] == "bob@c"
    assert done["details"]["approval"]["approve_reason"] == "numbers look right"
    assert "approved by bob@c" in done["reason"] and approving.deployments_put() == 1
    assert approving.slot().status == "submitted"

    status, again = approving.post(f"/api/decisions/{rec.id}/approve", {"reason": "twice"})
    assert status == 202 and again["at"] == done["at"] and approving.deployments_put() == 1


@pytest.mark.both_ledgers
def test_a_newer_candidate_supersedes_a_pending_deploy_said_in_both_records(approving: Approving) -> None:
    old = approving.pending()
    approving.azure.arm.add_model(MODEL, "4", tags={"r2_score": "0.61"})

    status, newer = approving.post(
        f"/api/models/{MODEL}/deploy", {"reason": "ship 4", "version": "4"}, signed(ADA, "ada@contoso")
    )

    assert status == 200 and newer["outcome"] == "pending"
    assert f"supersedes decision {old.id}, which waited for approval" in newer["reason"]
    stored = approving.azure.decision(old.id)
    assert stored is not None and stored.outcome == "skipped"
    assert f"superseded by decision {newer['id']}, a newer candidate" in stored.reason
    assert stored.details["approval"]["superseded_by"] == newer["id"]
    assert (approving.slot().decision, approving.slot().status) == (newer["id"], "pending")
    status, late = approving.post(f"/api/decisions/{old.id}/approve", {"reason": "the old one"})
    assert status == 409 and "skipped, not pending" in late["error"] and approving.deployments_put() == 0
    status, done = approving.post(f"/api/decisions/{newer['id']}/approve", {"reason": "the new one"})
    assert status == 202 and done["outcome"] == "submitted" and approving.deployments_put() == 1


@pytest.mark.both_ledgers
def test_approvals_sent_at_once_carry_the_deploy_out_once(approving: Approving) -> None:
    rec = approving.pending()
    workers = [approving.azure.new_worker() for _ in range(4)]
    results: list[Any] = []
    barrier = threading.Barrier(len(workers))

    def approve(worker: Any, n: int) -> None:
        trigger = Trigger("http", f"approve-{n}", "ManualRequest.approve", BOB_CALLER, channel=OPERATOR)
        barrier.wait()
        try:
            results.append(worker.approve(rec.id, trigger, f"go {n}"))
        except (NotApplicable, TransientError) as exc:
            results.append(exc)

    threads = [threading.Thread(target=approve, args=(w, n)) for n, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert approving.deployments_put() == 1
    records = [r for r in results if isinstance(r, DecisionRecord)]
    assert records and all(r.id == rec.id for r in records)
    assert all(isinstance(r, DecisionRecord) or "being approved" in str(r) for r in results)
    stored = approving.azure.decision(rec.id)
    assert stored is not None and stored.outcome == "submitted"


@pytest.mark.both_ledgers
def test_a_rejected_deploy_releases_the_slot_with_its_reason(approving: Approving) -> None:
    rec = approving.pending()

    status, out = approving.post(f"/api/decisions/{rec.id}/reject", {"reason": "wrong data window"})

    assert status == 200 and out["outcome"] == "skipped"
    assert "rejected by bob@c" in out["reason"] and "wrong data window" in out["reason"]
    assert out["details"]["approval"]["rejected_by"] == "bob@c" and approving.slot() is None
    status, late = approving.post(f"/api/decisions/{rec.id}/approve", {"reason": "too late"})
    assert status == 409 and "skipped, not pending" in late["error"]
    assert approving.deployments_put() == 0
    status, again = approving.post(f"/api/decisions/{rec.id}/reject", {"reason": "again"})
    assert status == 200 and again["at"] == out["at"]


@pytest.mark.both_ledgers
def test_an_expired_deploy_is_released_by_the_reconciler(approving: Approving) -> None:
    rec = approving.pending()
    approving.azure.now.advance(hours=23)
    approving.azure.reconcile()
    assert approving.slot().status == "pending"

    approving.azure.now.advance(hours=1, minutes=1)
    report = approving.azure.reconcile()

    assert [r.id for r in report.released] == [rec.id] and approving.slot() is None
    stored = approving.azure.decision(rec.id)
    assert stored is not None and stored.outcome == "skipped" and "expired at" in stored.reason
    assert stored.details["approval"]["released_by"] == "reconciler" and approving.deployments_put() == 0
    status, late = approving.post(f"/api/decisions/{rec.id}/approve", {"reason": "late"})
    assert status == 409 and "skipped, not pending" in late["error"]


@pytest.mark.both_ledgers
def test_four_eyes_refuses_the_requester_and_lets_a_second_caller_approve(approving: Approving) -> None:
    approving.azure.arm.add_model(MODEL, "4", tags={"r2_score": "0.61"})
    status, rec = approving.post(
        f"/api/models/{MODEL}/deploy", {"reason": "ship 4", "version": "4"}, signed(ADA, "ada@contoso")
    )
    assert status == 200 and rec["outcome"] == "pending", rec

    status, own = approving.post(f"/api/decisions/{rec['id']}/approve", {"reason": "mine"}, signed(ADA, "ada@contoso"))
    assert status == 403 and "may not approve it too" in own["error"] and approving.deployments_put() == 0
    assert f"models.{MODEL}.deploy.approval.four_eyes" in own["error"]

    status, done = approving.post(f"/api/decisions/{rec['id']}/approve", {"reason": "checked"}, signed(BOB, "bob@c"))
    assert status == 202 and done["details"]["approval"]["approver"]["id"] == BOB
    assert done["trigger"]["caller"]["id"] == ADA and approving.deployments_put() == 1


@pytest.mark.both_ledgers
def test_the_approver_role_is_asked_of_whoever_approves_or_rejects_a_deploy(
    ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy.approval.approver_role: an operator without the app role (from the App Service principal's
    claims) is refused both ways with a 403 naming the role and the key; a holder of the role approves."""
    monkeypatch.chdir(tmp_path)
    signed_in(monkeypatch)
    for approving in opened(tmp_path, ledger_spec, {"approver_role": "Retrain.Approver"}):
        rec = approving.pending()
        for verb in ("approve", "reject"):
            status, out = approving.post(f"/api/decisions/{rec.id}/{verb}", {"reason": verb})  # Bob: operator only
            assert status == 403 and "bob@c lacks the app role 'Retrain.Approver'" in out["error"]
            assert f"models.{MODEL}.deploy.approval.approver_role" in out["error"]
        assert approving.slot().status == "pending" and approving.deployments_put() == 0

        approver = signed(CAROL, "carol@c", "Retrain.Approver")
        status, done = approving.post(f"/api/decisions/{rec.id}/approve", {"reason": "go"}, approver)

        assert status == 202 and done["outcome"] == "submitted" and approving.deployments_put() == 1
        assert done["details"]["approval"]["approver"]["id"] == CAROL
        assert "Retrain.Approver" in done["details"]["approval"]["approver"]["roles"]


def test_an_approved_deploy_whose_worker_failed_is_finished_by_the_reconciler_as_approved(
    approving: Approving,
) -> None:
    rec = approving.pending()
    approving.azure.arm.fail(
        503, method="PUT", path=DEPLOYMENTS, times=1000
    )  # Azure unavailable: the reservation stays
    trigger = Trigger("cli", "a-1", "ManualRequest.approve", (("kind", "command line"), ("user", "bob")))
    with pytest.raises(TransientError):
        approving.azure.worker.approve(rec.id, trigger, "go")
    assert approving.slot().status == "reserved" and approving.deployments_put() == 0
    approving.azure.arm.faults.clear()

    approving.azure.now.advance(minutes=2)  # past the lease
    report = approving.azure.reconcile()

    [resumed] = report.resumed
    assert (resumed.id, resumed.outcome) == (rec.id, "submitted") and approving.deployments_put() == 1
    assert resumed.details["approval"]["approved_by"] == "bob"


def test_the_command_line_approves_and_rejects(approving: Approving, capsys: pytest.CaptureFixture[str]) -> None:
    rec = approving.pending()
    assert cli.main(["reject", rec.id, "--reason", "not this week", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["outcome"] == "skipped" and "not this week" in out["reason"]
    assert cli.main(["approve", rec.id, "--reason", "x"]) == 2
    assert "not pending" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("{expires: 0s}", "expires must be from 1m to 30d"),
        ("{expires: soon}", "not a duration"),
        ("{required: true, four_eye: true}", "four_eye"),
        ("{required: maybe}", "write true or false"),
        ("{approver_role: 'Retrain Approver'}", "without spaces, e.g. 'Retrain.Approver'"),
        ("true", "expected a mapping of keys to values, e.g. {key: value}"),
    ],
)
def test_each_approval_mistake_names_the_key_and_the_fix(entry: str, says: str) -> None:
    policy = "models:\n  churn:\n    deploy:\n      endpoint: churn-ep\n      approval: " + entry + "\n"
    with pytest.raises(PolicyError) as info:
        parse_policy(policy, "policy.yaml")
    assert any(says in p and "models.churn.deploy.approval" in p for p in info.value.problems), info.value.problems


def test_expiry_defaults_to_a_day() -> None:
    policy = parse_policy("models:\n  churn:\n    deploy:\n      endpoint: churn-ep\n      approval: {}\n", "p.yaml")
    approval = policy.models["churn"].deploy.approval  # type: ignore[union-attr]
    assert approval is not None and approval.expires == timedelta(hours=24) and approval.four_eyes
