"""DESIGN guarantee 1 under crashes: a worker that dies anywhere between taking a decision and
finishing its event leaves work that ends with exactly one job, whether the event is redelivered or
only the reconciler comes by.

The real Azure ML SDK path (``AzureMLActions`` against the fake ARM), on each ledger. The worker's
death is a :class:`tests.crashes.WorkerDied` raised by test code wrapped around the ports the
service is given, at each point:

- after-reserve: the model's slot is reserved and the reserved record written (one write); nothing
  reached Azure;
- after-submit: Azure accepted the job; the outcome is neither recorded nor confirmed;
- after-outcome: the outcome is recorded; the model's state still says reserved (the executor now
  writes both in one write: this is what a worker of the code before left, still repaired);
- after-confirm: the outcome is recorded and confirmed (one write); the event is not marked finished.

And whatever comes after (the run ends and frees the model's slot, a redelivery), the decision
recorded under the event's id stands: the redelivery answers with it and `retrain why` tells it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from handlers.claims import LEASE  # the service's default
from handlers.errors import TransientError
from handlers.ports import Claim
from handlers.records import DecisionRecord, iso
from handlers.retrainer import Retrainer
from handlers.signals import Trigger
from tests.azure_world import DRIFT_SAMPLE, MODEL, WORKSPACE_ID, AzureWorld, in_workspace
from tests.crashes import DiesAfterActing, DiesBeforeActing, FinishFailsOnce, LedgerThatDies, WorkerDied
from tests.ledgers import LedgerSpec

pytestmark = pytest.mark.both_ledgers  # crash points: what each ledger keeps when a worker dies between two writes

POINTS = ["after-reserve", "after-submit", "after-outcome", "after-confirm"]


def dying_service(world: AzureWorld, point: str) -> Retrainer:
    if point == "after-reserve":
        return world.new_worker(actions=DiesBeforeActing(world.actions))
    if point == "after-submit":
        return world.new_worker(actions=DiesAfterActing(world.actions))
    return world.new_worker(ledger=LedgerThatDies(world.ledger_spec.open(), point.removeprefix("after-")))


def crash(world: AzureWorld, point: str, raw: dict[str, Any]) -> str:
    """Deliver ``raw`` to a worker that dies at ``point``; the decision it had reserved."""
    with pytest.raises(WorkerDied):
        world.deliver(raw, dying_service(world, point))
    flight = world.ledger_spec.open().get_model(MODEL).flights["retrain"]
    assert flight.status == ("submitted" if point == "after-confirm" else "reserved")
    assert len(world.arm.job_puts) == (0 if point == "after-reserve" else 1)
    return flight.decision


def assert_one_job_confirmed(world: AzureWorld, decision_id: str) -> DecisionRecord:
    ledger = world.ledger_spec.open()
    rec = ledger.get_decision(decision_id)
    assert rec is not None and rec.outcome == "submitted"
    job = rec.job["name"]  # type: ignore[index]
    assert len(world.arm.job_puts) == 1 and list(world.arm.jobs) == [job]
    assert world.arm.job_puts[0].path == f"jobs/{job}"
    flight = ledger.get_model(MODEL).flights["retrain"]
    assert (flight.decision, flight.status, flight.job) == (decision_id, "submitted", job)
    return rec


def event_claim(world: AzureWorld, rec: DecisionRecord) -> Claim:
    """What the ledger says of the record's event (a finished event is not claimed again)."""
    t = rec.trigger
    return world.ledger_spec.open().claim_event(
        Trigger(t["source"], t["event_id"], t["event_type"]), world.now(), LEASE
    )


@pytest.mark.parametrize("point", POINTS)
def test_redelivery_after_a_crash_ends_with_one_job_confirmed_and_the_event_finished(
    azure: AzureWorld, point: str
) -> None:
    raw = in_workspace(DRIFT_SAMPLE)
    decision_id = crash(azure, point, raw)
    azure.now.advance(seconds=LEASE.total_seconds())  # the dead worker's claim on the event runs out
    calls = len(azure.arm.calls)

    [rec] = azure.deliver(raw, azure.new_worker()).decisions

    assert (rec.id, rec.outcome) == (decision_id, "submitted")
    assert assert_one_job_confirmed(azure, decision_id).to_dict() == rec.to_dict()
    assert event_claim(azure, rec) == Claim("done", (decision_id,))
    if point in ("after-outcome", "after-confirm"):  # the outcome was recorded: nothing to ask Azure
        assert len(azure.arm.calls) == calls
    else:
        assert rec.details.get("adopted", False) is (point == "after-submit")  # after-reserve: submitted now


def retrain_why(
    spec: LedgerSpec, event_id: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """What `retrain why EVENT_ID` prints on the ledger of ``spec``."""
    from function_app.cli import main as cli

    for name, value in spec.settings().items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert cli(["why", event_id]) == 0
    return capsys.readouterr().out


def run_ends(world: AzureWorld, rec: DecisionRecord) -> None:
    """The retrain's job ends (failed: nothing to deploy) and no event says so; the reconciler finds
    it after the grace and frees the model's slot. The model stays in its cooldown."""
    world.arm.set_job_status(str(rec.job["name"]), "Failed")  # type: ignore[index]
    world.now.advance(minutes=20)
    [caught] = world.new_worker().reconcile().caught
    assert caught.outcome == "skipped" and "ended failed" in caught.reason
    state = world.ledger_spec.open().get_model(MODEL)
    assert state.flights == {} and state.last_retrain_at is not None


def answered_as_recorded(
    world: AzureWorld, raw: dict[str, Any], rec: DecisionRecord, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """The redelivery (its claim taken over) answers with ``rec``, asks Azure nothing, submits no
    second job, rewrites nothing, finishes the event; `retrain why` says the event retrained."""
    calls = len(world.arm.calls)

    [again] = world.deliver(raw, world.new_worker()).decisions

    assert again.to_dict() == rec.to_dict()
    ledger = world.ledger_spec.open()
    assert ledger.get_decision(rec.id) == rec and ledger.decisions(event_id=raw["id"]) == [rec]
    assert len(world.arm.calls) == calls and len(world.arm.job_puts) == 1
    assert event_claim(world, rec) == Claim("done", (rec.id,))
    out = retrain_why(world.ledger_spec, raw["id"], monkeypatch, capsys)
    assert f"retrain submitted  model={MODEL}  id={rec.id}" in out
    assert f"job      {rec.job['name']}" in out and "cooldown" not in out  # type: ignore[index]


@pytest.mark.parametrize("point", POINTS)
def test_a_redelivery_after_the_run_ended_answers_with_the_decision_recorded_and_rewrites_nothing(
    azure: AzureWorld, point: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21, finding 2: once the run had ended and freed the slot, the redelivery met the cooldown
    and wrote ``skipped: model is in cooldown``, job null, over the decision that had retrained."""
    raw = in_workspace(DRIFT_SAMPLE)
    decision_id = crash(azure, point, raw)
    azure.now.advance(seconds=LEASE.total_seconds())
    azure.new_worker().reconcile()  # carries the dead worker's reservation out (after-confirm: nothing to)
    rec = assert_one_job_confirmed(azure, decision_id)
    run_ends(azure, rec)

    answered_as_recorded(azure, raw, rec, monkeypatch, capsys)


def test_one_transient_failure_marking_the_event_done_never_leads_to_a_rewrite(
    azure: AzureWorld, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21, finding 2, on the Azure ML backend: the job was submitted and recorded, marking the
    event done failed once (transient: Event Grid redelivers, later); the run ended meanwhile."""
    raw = in_workspace(DRIFT_SAMPLE)
    with pytest.raises(TransientError, match="503"):
        azure.deliver(raw, azure.new_worker(ledger=FinishFailsOnce(azure.ledger_spec.open())))
    decision_id = azure.ledger_spec.open().get_model(MODEL).flights["retrain"].decision
    rec = assert_one_job_confirmed(azure, decision_id)
    assert azure.ledger_spec.open().event_status(Trigger(WORKSPACE_ID, raw["id"], raw["eventType"])) == (
        "processing",
        [],
    )
    run_ends(azure, rec)

    answered_as_recorded(azure, raw, rec, monkeypatch, capsys)


@pytest.mark.parametrize("point", POINTS)
def test_the_reconciler_alone_finishes_the_work_after_the_lease(azure: AzureWorld, point: str) -> None:
    raw = in_workspace(DRIFT_SAMPLE)
    decision_id = crash(azure, point, raw)
    azure.now.advance(seconds=LEASE.total_seconds())

    report = azure.new_worker().reconcile()

    assert report.released == [] and report.deferred == []
    if point == "after-confirm":  # confirmed: nothing in flight is stale
        assert (report.found, report.resumed) == ([], [])
    else:
        assert [f["decision"] for f in report.found] == [r.id for r in report.resumed] == [decision_id]
        assert report.resumed[0].outcome == "submitted"
    rec = assert_one_job_confirmed(azure, decision_id)

    # The event is not the reconciler's to finish: its redelivery finds the work done, asks Azure nothing.
    calls = len(azure.arm.calls)
    [again] = azure.deliver(raw, azure.new_worker()).decisions
    assert again.to_dict() == rec.to_dict() and len(azure.arm.calls) == calls
    assert event_claim(azure, rec) == Claim("done", (decision_id,))
    assert_one_job_confirmed(azure, decision_id)


def test_reconcile_on_a_clean_ledger_does_nothing(azure: AzureWorld) -> None:
    report = azure.reconcile()
    assert report.to_dict() == {
        "at": iso(azure.now()),
        "found": [],
        "resumed": [],
        "released": [],
        "checked": [],
        "caught": [],
        "deferred": [],
        "rollouts": [],
        "retired": [],
        "started": [],
        "picked_up": [],  # no model picks up from a registry: none is polled
        "purged": 0,
        "notified": {"sent": [], "attempts": 0, "more": False, "error": None, "deferred": [], "dead": []},  # no topic
    }
    assert azure.arm.calls == [] and azure.service.ledger.list_models() == []


def test_a_reservation_younger_than_the_lease_is_left_alone(azure: AzureWorld) -> None:
    decision_id = crash(azure, "after-submit", in_workspace(DRIFT_SAMPLE))
    azure.now.advance(seconds=LEASE.total_seconds() - 1)  # its worker may still be acting
    calls = len(azure.arm.calls)

    report = azure.new_worker().reconcile()

    assert (report.found, report.resumed, report.released) == ([], [], [])
    assert len(azure.arm.calls) == calls
    ledger = azure.ledger_spec.open()
    assert ledger.get_model(MODEL).flights["retrain"].status == "reserved"
    assert ledger.get_decision(decision_id).outcome == "reserved"  # type: ignore[union-attr]

    azure.now.advance(seconds=1)
    assert [r.id for r in azure.new_worker().reconcile().resumed] == [decision_id]
    assert_one_job_confirmed(azure, decision_id)


def test_retention_purges_old_finished_events_and_decisions_but_never_a_reserved_one(azure: AzureWorld) -> None:
    old_event = in_workspace(DRIFT_SAMPLE)
    [old] = azure.deliver(old_event).decisions
    ledger = azure.ledger_spec.open()
    reserved = DecisionRecord(
        id="re-reserved-long-ago",
        model="churn-classifier",
        action="retrain",
        outcome="reserved",
        reason="a reservation nothing holds any more",
        trigger={"source": "http", "event_id": "req-9", "event_type": "ManualRequest.retrain"},
        at=iso(azure.now()),
        details={"rendered": {}},
    )
    ledger.put_decision(reserved)
    azure.now.advance(days=31)
    recent = {**in_workspace(DRIFT_SAMPLE), "id": "a-recent-event"}
    [new] = azure.deliver(recent).decisions  # skipped: the first job still holds the model

    report = azure.new_worker().reconcile()

    assert report.purged == 2  # the old event and its decision
    assert ledger.get_decision(old.id) is None
    assert event_claim(azure, old) == Claim("new")  # forgotten: a redelivery would be a new event
    assert ledger.get_decision(reserved.id) == reserved
    assert ledger.get_decision(new.id) is not None and event_claim(azure, new) == Claim("done", (new.id,))
    assert json.dumps(report.to_dict())  # the report is JSON, as the CLI prints it


def test_the_reconciler_purges_at_most_once_an_hour_per_worker(azure: AzureWorld) -> None:
    """Purging scans whole tables; the reconciler ticks every 5 minutes."""
    service = azure.new_worker(retention=timedelta(minutes=10))
    assert service.reconcile().purged == 0  # the purge ran, with nothing old yet
    [old] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    azure.now.advance(minutes=30)  # the record is past the retention, the last purge 30 minutes old
    assert service.reconcile().purged == 0
    assert azure.ledger_spec.open().get_decision(old.id) is not None
    azure.now.advance(minutes=30)
    assert service.reconcile().purged == 2  # an hour since the last purge: the event and its decision
    assert azure.ledger_spec.open().get_decision(old.id) is None
