"""Approvals of retrains (issue 24): ``retrain.approval`` makes a retrain wait, recorded ``pending`` with the
pipeline job it would submit and holding its model's retrain slot, until a second caller approves it
(submitted once, through the executor) or rejects it; the reconciler releases an expired one; a newer
signal's retrain supersedes it. A worker that dies between a release's steps is repaired by the reconciler.
Who may decide: the approver role, and four eyes that a function key cannot satisfy. End to end through the
local host, with the real Azure ML SDK against the fake ARM, on both ledgers."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from function_app import cli, runtime
from function_app.localhost import Host
from handlers import guards
from handlers.policy import Policy
from handlers.records import DecisionRecord
from handlers.signals import OPERATOR, Trigger
from tests.azure_world import DRIFT_SAMPLE, MODEL, AzureWorld, in_workspace
from tests.builders import BOB, BOB_CALLER, CAROL, signed, signed_in
from tests.conftest import REPO, Client
from tests.crashes import DiesBeforeActing, DiesBeforeRecording, LedgerThatDies, WorkerDied
from tests.ledgers import LedgerSpec


class Waiting:
    """The example policy with ``retrain.approval`` on the model, the app serving the routes."""

    def __init__(self, tmp_path: Path, spec: LedgerSpec, approval: dict[str, Any]) -> None:
        import main

        raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
        raw["models"][MODEL]["retrain"]["approval"] = approval
        self.azure = AzureWorld(tmp_path, spec, policy=Policy.model_validate(raw))
        runtime.set_retrainer(self.azure.worker)
        self.client = Client(Host(main.app))
        self.drifts = 0

    def drift(self, worker: Any = None) -> DecisionRecord:
        """A drift event of its own id: the model's retrain."""
        self.drifts += 1
        raw = copy.deepcopy(in_workspace(DRIFT_SAMPLE))
        raw["id"] = f"drift-{self.drifts}"
        [rec] = self.azure.deliver(raw, worker).decisions
        return rec

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, _, out = self.client.call("POST", path, body, signed(BOB, "bob@c") if headers is None else headers)
        return status, out

    def slot(self) -> Any:
        return self.azure.ledger.get_model(MODEL).flights.get(guards.RETRAIN)

    def notes(self, kind: str) -> list[Any]:
        outbox = self.azure.ledger.notifications(dead=False, limit=50)
        return [e.notification for e in outbox if e.notification.type == f"retrain.decision.retrain.{kind}"]


def open_world(tmp_path: Path, spec: LedgerSpec, approval: dict[str, Any]) -> Iterator[Waiting]:
    world = Waiting(tmp_path, spec, approval)
    yield world
    runtime.set_retrainer(None)
    world.azure.close()
    assert world.azure.arm.unexpected == []


@pytest.fixture
def waiting(ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Waiting]:
    monkeypatch.chdir(tmp_path)  # not a git repository, as on Azure
    signed_in(monkeypatch)
    yield from open_world(tmp_path, ledger_spec, {"required": True, "expires": "24h"})


@pytest.mark.both_ledgers
def test_a_pending_retrain_shows_its_job_holds_the_slot_and_is_submitted_once_when_approved(waiting: Waiting) -> None:
    rec = waiting.drift()

    assert (rec.action, rec.outcome) == ("retrain", "pending") and "waits for approval until" in rec.reason
    job = rec.details["rendered"]
    assert (
        job["type"] == "pipeline"
        and job["component"] == "diabetes-retrain:3"
        and rec.job == {"name": job["name"], "url": None}
    )
    assert waiting.azure.arm.job_puts == []  # nothing submitted
    assert (waiting.slot().decision, waiting.slot().status) == (rec.id, "pending")
    again = waiting.drift()  # the guards count it: a second breach within the cooldown asks nothing new
    assert (again.outcome, again.details["guard"]) == ("skipped", "cooldown")
    [note] = waiting.notes("pending")
    assert note.data["details"]["rendered"]["name"] == job["name"]
    assert note.data["details"]["approval"]["links"]["approve"] == f"/api/decisions/{rec.id}/approve"
    _, _, models = waiting.client.call("GET", "/api/models")
    [view] = [m for m in models["models"] if m["model"] == MODEL]
    assert view["state"] == "waiting for approval"
    waiting.azure.reconcile()  # a pass leaves it waiting
    assert waiting.slot().status == "pending"

    status, done = waiting.post(f"/api/decisions/{rec.id}/approve", {"reason": "the breach is real"})

    assert status == 202 and (done["id"], done["outcome"]) == (rec.id, "submitted")
    assert done["details"]["approval"]["approved_by"] == "bob@c" and done["job"]["name"] == job["name"]
    assert [c.path for c in waiting.azure.arm.job_puts] == [f"jobs/{job['name']}"]
    assert (waiting.slot().status, waiting.slot().job) == ("submitted", job["name"])
    status, twice = waiting.post(f"/api/decisions/{rec.id}/approve", {"reason": "twice"})
    assert status == 202 and twice["at"] == done["at"] and len(waiting.azure.arm.job_puts) == 1


@pytest.mark.both_ledgers
def test_a_rejected_retrain_frees_the_slot_and_is_published(waiting: Waiting) -> None:
    rec = waiting.drift()

    status, out = waiting.post(f"/api/decisions/{rec.id}/reject", {"reason": "a known upstream outage"})

    assert status == 200 and out["outcome"] == "skipped" and waiting.slot() is None
    assert "rejected by bob@c" in out["reason"] and "nothing submitted, the slot is free" in out["reason"]
    assert waiting.azure.arm.job_puts == []
    [note] = waiting.notes("rejected")
    assert note.data["details"]["approval"]["rejected_by"] == "bob@c"
    assert note.data["details"]["approval"]["why"] == "a known upstream outage"


@pytest.mark.both_ledgers
def test_an_expired_retrain_is_released_by_the_reconciler_and_published(waiting: Waiting) -> None:
    rec = waiting.drift()
    waiting.azure.now.advance(hours=24, minutes=1)

    report = waiting.azure.reconcile()

    assert [r.id for r in report.released] == [rec.id] and waiting.slot() is None
    stored = waiting.azure.decision(rec.id)
    assert stored is not None and "without approval (retrain.approval.expires)" in stored.reason
    [note] = waiting.notes("expired")
    assert note.data["details"]["approval"]["released_by"] == "reconciler" and waiting.azure.arm.job_puts == []


@pytest.mark.both_ledgers
def test_a_newer_signals_retrain_supersedes_a_pending_one_said_in_both_records(waiting: Waiting) -> None:
    old = waiting.drift()
    waiting.azure.now.advance(hours=7)  # past the cooldown, within the expiry

    newer = waiting.drift()

    assert newer.outcome == "pending" and f"supersedes decision {old.id}, which waited for approval" in newer.reason
    stored = waiting.azure.decision(old.id)
    assert stored is not None and stored.outcome == "skipped"
    assert f"superseded by decision {newer.id}, a newer signal's retrain" in stored.reason
    assert waiting.slot().decision == newer.id and [n.data["id"] for n in waiting.notes("superseded")] == [old.id]
    status, late = waiting.post(f"/api/decisions/{old.id}/approve", {"reason": "the old one"})
    assert status == 409 and "skipped, not pending" in late["error"] and waiting.azure.arm.job_puts == []


@pytest.mark.both_ledgers
def test_a_worker_that_dies_after_marking_a_rejection_leaves_it_to_the_reconciler(waiting: Waiting) -> None:
    rec = waiting.drift()
    dying = waiting.azure.new_worker(ledger=DiesBeforeRecording(waiting.azure.spec.open(), "skipped"))
    trigger = Trigger("http", "r-1", "ManualRequest.reject", BOB_CALLER, channel=OPERATOR)
    with pytest.raises(WorkerDied):
        dying.approve(rec.id, trigger, "not now", approve=False)
    assert waiting.slot().status == "pending"  # marked released: an approval can no longer take it
    status, late = waiting.post(f"/api/decisions/{rec.id}/approve", {"reason": "race"})
    assert status == 409 and "being approved or released by another request" in late["error"]

    [released] = waiting.azure.reconcile().released

    assert (released.id, released.outcome) == (rec.id, "skipped") and "not now" in released.reason
    assert released.details["approval"]["rejected_by"] == "bob@c" and waiting.slot() is None
    assert waiting.azure.arm.job_puts == []


@pytest.mark.both_ledgers
def test_a_reconciler_that_dies_releasing_an_expired_retrain_is_finished_by_the_next_pass(waiting: Waiting) -> None:
    rec = waiting.drift()
    waiting.azure.now.advance(hours=25)
    dying = waiting.azure.new_worker(ledger=DiesBeforeRecording(waiting.azure.spec.open(), "skipped"))
    with pytest.raises(WorkerDied):
        dying.reconcile(waiting.azure.now.now)
    assert waiting.slot() is not None and "release" in waiting.slot().data

    [released] = waiting.azure.reconcile().released

    assert released.id == rec.id and "expired at" in released.reason and waiting.slot() is None
    [note] = waiting.notes("expired")
    assert note.data["id"] == rec.id


@pytest.mark.both_ledgers
def test_a_superseding_worker_that_dies_before_saying_so_is_repaired_by_the_reconciler(waiting: Waiting) -> None:
    old = waiting.drift()
    waiting.azure.now.advance(hours=7)
    dying = waiting.azure.new_worker(ledger=DiesBeforeRecording(waiting.azure.spec.open(), "skipped"))
    with pytest.raises(WorkerDied):
        waiting.drift(dying)
    newer = waiting.slot()
    assert newer.decision != old.id and newer.status == "reserved" and newer.data["supersedes"] == old.id
    assert waiting.azure.decision(old.id).outcome == "pending"  # type: ignore[union-attr]

    waiting.azure.now.advance(minutes=2)  # past the lease
    waiting.azure.reconcile()

    stored = waiting.azure.decision(old.id)
    assert stored is not None and stored.outcome == "skipped"
    assert f"superseded by decision {newer.decision}" in stored.reason
    assert [n.data["id"] for n in waiting.notes("superseded")] == [old.id] and waiting.azure.arm.job_puts == []


@pytest.mark.both_ledgers
def test_a_superseding_event_redelivered_after_its_approval_changes_nothing_and_says_nothing_twice(
    waiting: Waiting,
) -> None:
    """The superseding event's worker died before finishing the event; Bob approved its retrain and his
    worker died before submitting. The redelivery carries it out as approved, once: it does not ask for
    approval again, and neither record nor the outbox says 'supersedes' or 'pending' a second time."""
    old = waiting.drift()
    waiting.azure.now.advance(hours=7)
    with pytest.raises(WorkerDied):  # recorded pending, superseded the old one, died before finishing the event
        waiting.drift(waiting.azure.new_worker(ledger=LedgerThatDies(waiting.azure.spec.open(), "confirm")))
    newer = waiting.slot().decision
    said_before = waiting.azure.decision(old.id)
    trigger = Trigger("http", "a-1", "ManualRequest.approve", BOB_CALLER, channel=OPERATOR)
    with pytest.raises(WorkerDied):
        waiting.azure.new_worker(DiesBeforeActing(waiting.azure.actions)).approve(newer, trigger, "go")
    assert waiting.slot().status == "reserved" and waiting.azure.arm.job_puts == []
    waiting.azure.now.advance(minutes=3)  # past the event's lease: Event Grid redelivers it
    raw = copy.deepcopy(in_workspace(DRIFT_SAMPLE))
    raw["id"] = "drift-2"

    [again] = waiting.azure.deliver(raw).decisions

    assert (again.id, again.outcome) == (newer, "submitted") and len(waiting.azure.arm.job_puts) == 1
    assert again.details["approval"]["approved_by"] == "bob@c" and "approved by bob@c" in again.reason
    assert again.reason.count(f"supersedes decision {old.id}") == 1
    assert waiting.azure.decision(old.id) == said_before  # the superseded record is not written again
    assert [n.data["id"] for n in waiting.notes("superseded")] == [old.id]
    assert sorted(n.data["id"] for n in waiting.notes("pending")) == sorted([old.id, newer])
    waiting.azure.reconcile()
    assert len(waiting.azure.arm.job_puts) == 1 and waiting.slot().status == "submitted"


@pytest.mark.both_ledgers
def test_the_approver_role_is_asked_of_whoever_approves_or_rejects(
    ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    signed_in(monkeypatch)
    for waiting in open_world(tmp_path, ledger_spec, {"approver_role": "Retrain.Approver"}):
        rec = waiting.drift()
        status, out = waiting.post(f"/api/decisions/{rec.id}/approve", {"reason": "go"})  # Bob: operator only
        assert status == 403 and "bob@c lacks the app role 'Retrain.Approver'" in out["error"]
        assert f"models.{MODEL}.retrain.approval.approver_role" in out["error"]
        status, out = waiting.post(f"/api/decisions/{rec.id}/reject", {"reason": "no"})
        assert status == 403 and "lacks the app role" in out["error"] and waiting.slot().status == "pending"

        approver = signed(CAROL, "carol@c", "Retrain.Approver")
        status, done = waiting.post(f"/api/decisions/{rec.id}/approve", {"reason": "go"}, approver)

        assert status == 202 and done["details"]["approval"]["approver"]["id"] == CAROL
        assert "Retrain.Approver" in done["details"]["approval"]["approver"]["roles"]
        assert len(waiting.azure.arm.job_puts) == 1


@pytest.mark.both_ledgers
def test_a_function_key_can_neither_approve_nor_reject_under_four_eyes(
    ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without sign-in every caller is 'function key': under four eyes nobody can tell the approver from
    the requester, so it is refused rather than counted as a second person; nor may it reject, or a leaked
    key would reject every candidate, unnamed (a denial of promotion). A named person (the command line)
    may; what nobody decides expires."""
    monkeypatch.chdir(tmp_path)
    for waiting in open_world(tmp_path, ledger_spec, {"four_eyes": True}):
        rec = waiting.drift()
        status, out = waiting.post(f"/api/decisions/{rec.id}/approve", {"reason": "go"}, {})
        assert status == 403 and "a signed-in identity is needed to approve it" in out["error"]
        assert "four_eyes: false" in out["error"] and waiting.slot().status == "pending"
        assert waiting.azure.arm.job_puts == []
        status, out = waiting.post(f"/api/decisions/{rec.id}/reject", {"reason": "nobody wants it"}, {})
        assert status == 403 and "a signed-in identity is needed to reject it" in out["error"], out
        assert "retrain reject" in out["error"] and "expires" in out["error"]
        assert waiting.slot().status == "pending" and waiting.azure.ledger.get_decision(rec.id).outcome == "pending"
        monkeypatch.setenv("USER", "ada")
        monkeypatch.setenv("LOGNAME", "ada")
        assert cli.main(["reject", rec.id, "--reason", "withdrawn"]) == 0
        assert "rejected by ada" in capsys.readouterr().out and waiting.slot() is None


@pytest.mark.both_ledgers
def test_a_function_key_may_approve_with_four_eyes_off(
    ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for waiting in open_world(tmp_path, ledger_spec, {"four_eyes": False}):
        rec = waiting.drift()
        status, out = waiting.post(f"/api/decisions/{rec.id}/approve", {"reason": "go"}, {})
        assert status == 202 and out["details"]["approval"]["approved_by"] == "function key"
        assert len(waiting.azure.arm.job_puts) == 1
