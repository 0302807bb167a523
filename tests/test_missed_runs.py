"""The reconciler catches retraining runs whose RunCompleted / RunStatusChanged event never arrived
(dead-lettered, filtered out): a submitted job past its grace period is looked up, and an ended one
is handled as its event would have been. First with the recording Actions fake, on SQLite;
then through the real SDK against the fake ARM."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from handlers import guards
from handlers.errors import PermanentError, TransientError
from handlers.plans import run_decision_id
from handlers.records import DecisionRecord
from tests.azure_world import ENDPOINT, WORKSPACE_ID, AzureWorld, in_workspace
from tests.builders import MODEL, WORKSPACE, drift_event, run_event
from tests.ledgers import LedgerSpec
from tests.world import MissedRuns


@pytest.fixture
def world(ledger_spec: LedgerSpec) -> MissedRuns:
    return MissedRuns(ledger_spec)


def test_a_completed_run_whose_event_was_missed_releases_the_hold_and_is_judged_as_a_candidate(
    world: MissedRuns,
) -> None:
    retrain = world.submit()
    job = world.job_of(retrain)
    world.actions.statuses[job] = "Completed"
    world.actions.run_tags[job] = {"r2_score": "0.61"}
    world.clock.advance(minutes=20)

    report = world.reconcile()

    assert report.checked == [{"model": MODEL, "decision": retrain.id, "job": job, "status": "Completed"}]
    [deploy] = report.caught
    assert (deploy.id, deploy.action, deploy.outcome) == (run_decision_id(MODEL, job), "deploy", "submitted")
    assert deploy.trigger == {
        "source": "reconciler",
        "event_id": f"reconciler:{job}:completed",
        "event_type": "Microsoft.MachineLearningServices.RunCompleted",
        "channel": "reconciler",
    }
    [plan] = world.actions.deployments
    assert plan.run_id == job and plan.source == "run" and plan.run_tags["r2_score"] == "0.61"
    assert plan.run_tags["retrain_decision"] == retrain.id  # the job's own tags
    flights = world.flights()
    assert "retrain" not in flights and flights["rollout"].decision == deploy.id
    assert report.deferred == [] and report.released == []


@pytest.mark.parametrize("status", ["Failed", "Canceled", "NotResponding"])
def test_a_run_that_ended_badly_releases_the_hold_deploys_nothing_and_the_cooldown_stands(
    world: MissedRuns, status: str
) -> None:
    retrain = world.submit()
    job = world.job_of(retrain)
    world.actions.statuses[job] = status
    world.clock.advance(minutes=20)

    report = world.reconcile()

    [skip] = report.caught
    assert skip.outcome == "skipped" and f"ended {status.lower()}; its single-flight hold is released" in skip.reason
    assert skip.trigger["event_type"] == "Microsoft.MachineLearningServices.RunStatusChanged"
    assert world.actions.deployments == []
    state = world.ledger.get_model(MODEL)
    assert state.flights == {} and state.last_retrain_at == retrain.at and state.budget_used == 1
    # The cooldown still holds off drift: the release is of the slot, not of the cooldown.
    [refused] = world.deliver(drift_event(event_id="drift-2")).decisions
    assert refused.details["guard"] == "cooldown" and len(world.actions.submissions) == 1


def test_a_running_job_keeps_its_hold(world: MissedRuns) -> None:
    retrain = world.submit()
    job = world.job_of(retrain)
    world.clock.advance(hours=2)

    report = world.reconcile()

    assert report.checked == [{"model": MODEL, "decision": retrain.id, "job": job, "status": "Running"}]
    assert report.caught == [] and report.released == []
    flight = world.flights()["retrain"]
    assert (flight.decision, flight.status, flight.job) == (retrain.id, "submitted", job)


def test_a_job_younger_than_the_grace_period_is_not_even_asked_about(world: MissedRuns) -> None:
    retrain = world.submit()
    world.actions.statuses[world.job_of(retrain)] = "Failed"
    world.clock.advance(minutes=14, seconds=59)

    report = world.reconcile()

    assert world.actions.status_calls == [] and report.checked == [] and report.caught == []
    assert world.flights()["retrain"].decision == retrain.id
    world.clock.advance(seconds=1)
    assert [r.outcome for r in world.reconcile().caught] == ["skipped"]
    assert world.flights() == {}


def test_a_job_the_workspace_does_not_have_is_released_with_the_reason(world: MissedRuns) -> None:
    retrain = world.submit()
    job = world.job_of(retrain)
    world.actions.forget(job)
    world.clock.advance(minutes=20)

    report = world.reconcile()

    assert report.checked == [{"model": MODEL, "decision": retrain.id, "job": job, "status": "missing"}]
    [rec] = report.released
    assert (rec.action, rec.outcome, rec.job) == ("retrain", "failed", {"name": job, "url": None})
    assert f"released the retrain hold of job {job}" in rec.reason and "has no such job" in rec.reason
    assert "cooldown and budget it took stand" in rec.reason
    assert world.ledger.get_decision(rec.id) == rec
    assert world.ledger.get_decision(retrain.id) == retrain  # what was submitted is still on record
    state = world.ledger.get_model(MODEL)
    assert state.flights == {} and state.last_retrain_at == retrain.at


def test_a_second_pass_does_nothing_more(world: MissedRuns) -> None:
    retrain = world.submit()
    job = world.job_of(retrain)
    world.actions.statuses[job] = "Completed"
    world.actions.run_tags[job] = {"r2_score": "0.61"}
    world.clock.advance(minutes=20)
    world.reconcile()
    calls = list(world.actions.status_calls)
    world.clock.advance(minutes=5)

    again = world.new_worker().reconcile()

    assert again.checked == [] and again.caught == [] and again.released == [] and again.deferred == []
    assert world.actions.status_calls == calls and len(world.actions.deployments) == 1


def test_the_late_real_event_after_the_reconciler_caught_the_run_deploys_nothing_more(world: MissedRuns) -> None:
    retrain = world.submit()
    job = world.job_of(retrain)
    world.actions.statuses[job] = "Completed"
    world.actions.run_tags[job] = {"r2_score": "0.61"}
    world.clock.advance(minutes=20)
    [caught] = world.reconcile().caught
    world.clock.advance(hours=1)

    tags = {**world.actions.jobs[job].tags, "r2_score": "0.61"}
    late = world.deliver(run_event(run_id=job, tags=tags, event_id="run-completed-1"))

    assert late.status == "processed" and late.decisions == [caught]  # the same decision, judged once
    assert len(world.actions.deployments) == 1
    assert world.flights()["rollout"].decision == caught.id


def test_the_late_event_of_a_candidate_the_gate_refused_does_not_judge_it_again(world: MissedRuns) -> None:
    retrain = world.submit()
    job = world.job_of(retrain)
    world.actions.statuses[job] = "Completed"
    world.clock.advance(minutes=20)
    world.actions.metrics = {"r2_score": "0.1"}  # below the policy's floor: the gate refuses the candidate
    [caught] = world.reconcile().caught
    assert caught.outcome == "skipped" and "rollout" not in world.flights()  # the slot is free again
    assert caught.details["gate"]["passed"] is False and caught.details["gate"]["candidate"] == 0.1

    late = world.deliver(run_event(run_id=job, tags=world.actions.jobs[job].tags))

    assert late.decisions == [caught] and world.actions.deployments == []
    assert len(world.actions.fact_reads) == 1  # judged once


def test_the_late_failure_event_of_a_caught_run_leaves_the_next_retrains_hold_alone(world: MissedRuns) -> None:
    first = world.submit()
    old_job = world.job_of(first)
    world.actions.statuses[old_job] = "Failed"
    world.clock.advance(minutes=20)
    world.reconcile()
    world.clock.advance(hours=7)  # past the cooldown: drift starts the next retrain
    [second] = world.deliver(drift_event(event_id="drift-3")).decisions
    assert second.outcome == "submitted"

    [late] = world.deliver(run_event(run_id=old_job, tags=world.actions.jobs[old_job].tags, status="Failed")).decisions

    assert late.outcome == "skipped" and late.trigger["source"] == WORKSPACE
    flight = world.flights()["retrain"]
    assert (flight.decision, flight.job) == (second.id, world.job_of(second))


def test_a_transient_failure_to_ask_defers_and_keeps_the_hold(world: MissedRuns) -> None:
    retrain = world.submit()
    world.clock.advance(minutes=20)
    world.actions.status_error = TransientError("ARM answered 503")

    report = world.reconcile()

    assert report.deferred == [{"model": MODEL, "decision": retrain.id, "error": "ARM answered 503"}]
    assert report.checked == [] and world.flights()["retrain"].status == "submitted"


def test_a_refusal_to_tell_defers_too_rather_than_guess(world: MissedRuns) -> None:
    retrain = world.submit()
    world.clock.advance(minutes=20)
    world.actions.status_error = PermanentError("Azure ML refused access")

    report = world.reconcile()

    assert [d["error"] for d in report.deferred] == ["Azure ML refused access"]
    assert world.flights()["retrain"].decision == retrain.id


def test_a_hold_whose_job_tags_name_no_model_is_released_all_the_same(world: MissedRuns) -> None:
    retrain = world.submit()
    job = world.job_of(retrain)
    world.actions.jobs[job] = replace(world.actions.jobs[job], tags={"retrain_model": "someone-else"})
    world.actions.statuses[job] = "Canceled"
    world.clock.advance(minutes=20)

    report = world.reconcile()

    assert len(report.caught) == 1 and world.flights() == {}


def test_the_report_lists_what_was_checked_and_caught_as_json(world: MissedRuns) -> None:
    job = world.job_of(world.submit())
    world.actions.statuses[job] = "Failed"
    world.clock.advance(minutes=20)
    report = world.reconcile().to_dict()
    assert json.loads(json.dumps(report)) == report
    assert report["checked"][0]["status"] == "Failed"
    assert DecisionRecord.from_dict(report["caught"][0]).outcome == "skipped"


# --------------------------------------------------------------------------- the real SDK


def submitted_through_the_sdk(azure: AzureWorld) -> DecisionRecord:
    [rec] = azure.deliver(
        in_workspace("Microsoft.MachineLearningServices.DatasetDriftDetected.eventgrid.json")
    ).decisions
    assert rec.outcome == "submitted" and rec.job is not None
    assert azure.arm.jobs[rec.job["name"]]["properties"]["status"] == "NotStarted"
    return rec


def test_a_job_the_workspace_reports_failed_has_its_hold_released_with_no_event(azure: AzureWorld) -> None:
    rec = submitted_through_the_sdk(azure)
    job = str(rec.job["name"])  # type: ignore[index]
    azure.now.advance(minutes=10)
    assert azure.reconcile().checked == []  # within the grace: Azure is not asked
    assert azure.arm.requests_to("GET", rf"^jobs/{job}$")[-1].status == 404  # the look before submitting
    azure.arm.set_job_status(job, "Failed")
    azure.now.advance(minutes=10)

    report = azure.new_worker().reconcile()

    assert report.checked == [{"model": MODEL, "decision": rec.id, "job": job, "status": "Failed"}]
    [skip] = report.caught
    assert skip.outcome == "skipped" and "ended failed" in skip.reason
    state = azure.service.ledger.get_model(MODEL)
    assert state.flights == {} and state.last_retrain_at == rec.at
    assert azure.arm.requests_to("GET", rf"^jobs/{job}$")[-1].status == 200
    assert len(azure.arm.job_puts) == 1 and azure.arm.requests_to("PUT", r"^onlineEndpoints/") == []


def test_a_job_reported_completed_that_beats_the_champion_starts_exactly_one_zero_traffic_deployment(
    azure: AzureWorld,
) -> None:
    rec = submitted_through_the_sdk(azure)
    job = str(rec.job["name"])  # type: ignore[index]
    azure.arm.set_job_status(job, "Completed")
    azure.arm.add_step(job, "evaluate_model", metrics={"r2_score": 0.61})  # logged with MLflow by the step
    azure.now.advance(minutes=20)

    [deploy] = azure.new_worker().reconcile().caught
    azure.provisioned()
    second = azure.new_worker().reconcile()
    assert second.caught == []  # a second pass: the hold is gone, and the rollout takes its first step
    assert [r["state"] for r in second.rollouts] == ["stepped"]
    late = azure.deliver(
        run_event(run_id=job, tags=azure.arm.jobs[job]["properties"]["tags"], topic=WORKSPACE_ID),
        azure.new_worker(),
    )

    assert (deploy.id, deploy.action, deploy.outcome) == (run_decision_id(MODEL, job), "deploy", "submitted")
    assert deploy.details["gate"]["passed"] is True and deploy.details["gate"]["candidate"] == 0.61
    assert late.decisions == [deploy]
    deployment = deploy.details["rendered"]["deployment"]
    [create] = azure.arm.requests_to("PUT", r"^onlineEndpoints/[^/]+/deployments/")
    assert create.path == f"onlineEndpoints/{ENDPOINT}/deployments/{deployment}"
    [register] = azure.arm.requests_to("PUT", r"^models/")
    assert register.body["properties"]["modelUri"] == f"azureml://jobs/{job}/outputs/model"
    assert azure.arm.traffic_puts == [{"blue": 90, deployment: 10}]
    flights = azure.service.ledger.get_model(MODEL).flights
    assert "retrain" not in flights and flights[guards.ROLLOUT].decision == deploy.id


def test_a_job_deleted_from_the_workspace_is_released_through_the_sdk(azure: AzureWorld) -> None:
    rec = submitted_through_the_sdk(azure)
    job = str(rec.job["name"])  # type: ignore[index]
    del azure.arm.jobs[job]
    azure.now.advance(minutes=20)

    [released] = azure.reconcile().released

    assert "has no such job" in released.reason and azure.service.ledger.get_model(MODEL).flights == {}


def test_job_status_reads_the_job_as_azure_ml_reports_it(azure: AzureWorld) -> None:
    azure.arm.add_job("run-7", experiment="diabetes-retrain", status="Running", tags={"retrain_model": MODEL})

    running = azure.actions.job_status("run-7")
    azure.arm.set_job_status("run-7", "Canceled", tags={"r2_score": "0.4"})
    canceled = azure.actions.job_status("run-7")

    assert running is not None and canceled is not None
    assert (running.name, running.status, running.experiment, running.terminal) == (
        "run-7",
        "Running",
        "diabetes-retrain",
        False,
    )
    assert (canceled.status, canceled.terminal) == ("Canceled", True)
    assert canceled.tags == {"retrain_model": MODEL, "r2_score": "0.4"}
    assert azure.actions.job_status("no-such-run") is None


def test_job_status_is_retried_when_throttled_and_a_refusal_says_what_to_grant(azure: AzureWorld) -> None:
    azure.arm.add_job("run-7", status="Failed")
    azure.arm.fail(429, method="GET", path=r"^jobs/run-7$", headers={"Retry-After": "3"})

    info = azure.actions.job_status("run-7")

    assert info is not None and info.terminal and azure.clock.slept == [3.0]
    azure.arm.fail(403, method="GET", path=r"^jobs/run-7$", code="AuthorizationFailed", message="no access")
    with pytest.raises(TransientError, match="take up to an hour to take effect"):  # roles may still propagate
        azure.actions.job_status("run-7")
    azure.clock.now += 3600  # an hour after the worker started: a 403 is a missing role
    azure.arm.fail(403, method="GET", path=r"^jobs/run-7$", code="AuthorizationFailed", message="no access")
    with pytest.raises(PermanentError, match="looking up pipeline job run-7: Azure ML refused access"):
        azure.actions.job_status("run-7")
    azure.arm.fail(503, method="GET", path=r"^jobs/run-7$", times=1000)
    with pytest.raises(TransientError, match="looking up pipeline job run-7"):
        azure.actions.job_status("run-7")


def test_the_dry_run_backend_has_no_jobs_to_report() -> None:
    from function_app.adapters.dryrun import DryRunActions

    assert DryRunActions().job_status("retrain-sklearn-regression-model-0123456789abcdef") is None
