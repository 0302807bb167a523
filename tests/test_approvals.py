"""Approvals of deploys (issue 24, its first part): ``deploy.approval`` makes a candidate that passed the
gate wait, recorded ``pending`` and holding its model's rollout slot, until a second caller approves it
(carried out once, also when approve is sent twice, at once, or its worker dies) or rejects it; the
reconciler releases an expired one. End to end through the local host, with the real Azure ML SDK
against the fake ARM."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from function_app import cli, runtime
from function_app.localhost import Host
from handlers import guards
from handlers.errors import NotApplicable, PolicyError, TransientError
from handlers.policy import Policy
from handlers.policy_file import parse_policy
from handlers.records import DecisionRecord
from handlers.signals import OPERATOR, Trigger
from tests.azure_world import ENDPOINT, MODEL, AzureWorld
from tests.builders import ADA, BOB, BOB_CALLER, CAROL, signed, signed_in
from tests.conftest import REPO, Client
from tests.ledgers import LedgerSpec

DEPLOYMENTS = rf"^onlineEndpoints/{ENDPOINT}/deployments/[^/]+$"


class Approving:
    """The example policy with ``deploy.approval`` on the model, the app serving the routes."""

    def __init__(self, tmp_path: Path, spec: LedgerSpec, approval: dict[str, Any]) -> None:
        import main

        raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
        raw["models"][MODEL]["deploy"]["approval"] = approval
        self.azure = AzureWorld(tmp_path, spec, policy=Policy.model_validate(raw))
        runtime.set_retrainer(self.azure.worker)
        self.client = Client(Host(main.app))

    def pending(self) -> DecisionRecord:
        [rec] = self.azure.deliver(self.azure.finished_run(r2="0.61")).decisions
        return rec

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """POST as ``headers`` say; by default signed in as Bob, an operator (four eyes need a signed-in caller)."""
        status, _, out = self.client.call("POST", path, body, signed(BOB, "bob@c") if headers is None else headers)
        return status, out

    def deployments_put(self) -> int:
        return len([c for c in self.azure.arm.requests_to("PUT", DEPLOYMENTS) if c.status in (200, 201)])

    def slot(self) -> Any:
        return self.azure.ledger.get_model(MODEL).flights.get(guards.ROLLOUT)


def approving_post(operated: Any, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    status, _, out = operated.client.call("POST", path, body, headers)
    return status, out


def opened(tmp_path: Path, spec: LedgerSpec, approval: dict[str, Any]) -> Iterator[Approving]:
    world = Approving(tmp_path, spec, approval)
    yield world
    runtime.set_retrainer(None)
    world.azure.close()
    assert world.azure.arm.unexpected == []


@pytest.fixture
def approving(ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Approving]:
    monkeypatch.chdir(tmp_path)  # not a git repository, as on Azure
    signed_in(monkeypatch)
    yield from opened(tmp_path, ledger_spec, {"required": True, "expires": "24h", "four_eyes": True})


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


@pytest.mark.both_ledgers
def test_a_promote_held_for_approval_waits_however_many_passes_go_by(
    ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy.approval.promote: the rollout holds before its promotion, recorded once, however many passes
    go by; the operator's promote approves it, not by the caller who asked for the deploy (four eyes)."""
    import main
    from tests.test_operate import BAKE, LAG, Operated

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
