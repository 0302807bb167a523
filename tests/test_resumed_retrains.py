"""A retrain resumed after its worker died (a redelivery of its event, or the reconciler once the lease ran out)
whose job that worker had submitted: the job is adopted and recorded ``submitted`` before anything is judged again.

The worker passed the retrain's checks and asked no approval (or had it) before it submitted; what changed since (a
champion now trained on the latest data, an approval the policy now asks for) cannot undo a job running in Azure ML.
Judged again, the resumed retrain was recorded ``skipped`` or ``pending`` and its slot freed while its job ran: a
second retrain could start beside it, and the running job's completion was no longer the service's own (a finished
run is ours only when the ledger holds its decision ``submitted`` with that job's name), so its candidate was never
judged. A resumed retrain whose job does not exist goes on as a first delivery does: judged, then submitted.

The real Azure ML SDK against the fake ARM, on each ledger: what stands after a crash is what the ledger kept.
"""

from __future__ import annotations

import pytest

from handlers.signals import Trigger
from tests.azure_world import DATASET, DRIFT_SAMPLE, MODEL, AzureWorld, in_workspace
from tests.builders import with_retrain
from tests.crashes import DiesAfterActing, DiesBeforeActing, WorkerDied, resumed

pytestmark = pytest.mark.both_ledgers  # crash points: what each ledger keeps when a worker dies between two writes

PINNED = {
    "type": "mltable",
    "value": f"azureml:{DATASET}:2",
    "from": "policy",
    "pinned_from": f"azureml:{DATASET}@latest",
}


def changes(azure: AzureWorld, what: str) -> None:
    """What changes while the dead worker's job runs: the champion is now a version trained on the latest data (a
    retrain judged now is not worth it), or the policy now asks for an approval of the model's retrains."""
    if what == "champion":
        azure.champion_trained_on("2")
    else:
        azure.policy = with_retrain({"approval": {"required": True, "expires": "24h"}})


@pytest.mark.parametrize("by", ["redelivery", "reconciler"])
@pytest.mark.parametrize("what", ["champion", "approval"])
def test_a_resumed_retrain_whose_job_runs_adopts_it_though_it_would_not_be_submitted_now(
    azure: AzureWorld, what: str, by: str
) -> None:
    raw = in_workspace(DRIFT_SAMPLE)
    with pytest.raises(WorkerDied):  # submitted, then died before recording it
        azure.deliver(raw, azure.new_worker(DiesAfterActing(azure.actions)))
    [job] = list(azure.arm.jobs)
    changes(azure, what)
    jobs, calls = set(azure.arm.jobs), len(azure.arm.calls)

    rec = resumed(azure, raw, by)

    assert rec.outcome == "submitted", rec.reason
    assert (rec.job, rec.details["adopted"]) == ({"name": job, "url": rec.job["url"]}, True)  # type: ignore[index]
    assert rec.details["rendered"]["inputs"]["training_data"] == PINNED  # what the job trains on
    assert "worthiness" not in rec.details and "approval" not in rec.details  # nothing judged or asked again
    assert len(azure.arm.job_puts) == 1 and set(azure.arm.jobs) == jobs
    ledger = azure.ledger_spec.open()
    assert ledger.get_decision(rec.id) == rec
    flight = ledger.get_model(MODEL).flights["retrain"]
    assert (flight.decision, flight.status, flight.job) == (rec.id, "submitted", job)  # the slot stays with the job
    # the one request Azure ML was asked: does the job of this decision's name exist, and whose is it
    assert [(c.method, c.path) for c in azure.arm.calls[calls:]] == [("GET", f"jobs/{job}")]

    another = azure.deliver(in_workspace(DRIFT_SAMPLE) | {"id": "drift-while-it-runs"}).decisions
    assert [(r.outcome, r.details.get("guard")) for r in another] == [("skipped", "in_flight")]
    assert len(azure.arm.job_puts) == 1


@pytest.mark.parametrize("by", ["redelivery", "reconciler"])
def test_the_completion_of_an_adopted_job_is_the_services_own_and_its_candidate_judged(
    azure: AzureWorld, by: str
) -> None:
    raw = in_workspace(DRIFT_SAMPLE)
    with pytest.raises(WorkerDied):
        azure.deliver(raw, azure.new_worker(DiesAfterActing(azure.actions)))
    changes(azure, "champion")
    rec = resumed(azure, raw, by)

    [judged] = azure.deliver(azure.completed(str(rec.job["name"]))).decisions  # type: ignore[index]

    assert (judged.action, judged.outcome) == ("deploy", "submitted"), judged.reason
    assert azure.ledger_spec.open().get_model(MODEL).flights.keys() == {"rollout"}  # the retrain's slot freed by it


def test_a_first_delivery_looks_its_job_up_once_as_it_submits_it(azure: AzureWorld) -> None:
    """The look for a job before the checks is a resumed retrain's alone: a first delivery's one look-up is its
    submission's own (a job of its name met there is adopted as before)."""
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "submitted" and "adopted" not in rec.details, rec.reason
    job = str(rec.job["name"])  # type: ignore[index]
    assert [c.method for c in azure.arm.calls if c.path == f"jobs/{job}"] == ["GET", "PUT"]


@pytest.mark.parametrize("by", ["redelivery", "reconciler"])
def test_a_resumed_retrain_whose_worker_died_before_submitting_is_judged_again_as_a_first_delivery_is(
    azure: AzureWorld, by: str
) -> None:
    raw = in_workspace(DRIFT_SAMPLE)
    with pytest.raises(WorkerDied):  # reserved, then died before anything reached Azure ML
        azure.deliver(raw, azure.new_worker(DiesBeforeActing(azure.actions)))
    changes(azure, "champion")

    rec = resumed(azure, raw, by)

    assert (rec.outcome, rec.details["worthiness"]["champion"]) == ("skipped", f"{MODEL}:4"), rec.reason
    assert rec.reason.startswith("not worth it: the champion")
    assert azure.arm.job_puts == [] and azure.ledger_spec.open().get_model(MODEL).flights == {}
    assert len(azure.arm.requests_to("GET", r"^jobs/retrain-")) == 1  # looked for once, before it was judged


def test_an_approved_retrain_whose_worker_died_after_submitting_is_adopted_with_its_approval_by_the_reconciler(
    azure: AzureWorld,
) -> None:
    """Approved, submitted, and its worker died before recording it; the champion changed since. The reconciler
    adopts the job with the approval its reserved record holds, and judges nothing again."""
    changes(azure, "approval")
    [waiting] = azure.deliver(in_workspace(DRIFT_SAMPLE), azure.new_worker()).decisions
    assert waiting.outcome == "pending", waiting.reason
    approver = Trigger("cli", "approve-1", "ManualRequest.approve", caller=(("kind", "command line"), ("user", "bob")))
    with pytest.raises(WorkerDied):
        azure.new_worker(DiesAfterActing(azure.actions)).approve(waiting.id, approver, "checked")
    [job] = list(azure.arm.jobs)
    changes(azure, "champion")

    rec = resumed(azure, in_workspace(DRIFT_SAMPLE), "reconciler")

    assert (rec.id, rec.outcome, rec.job["name"], rec.details["adopted"]) == (waiting.id, "submitted", job, True)  # type: ignore[index]
    assert rec.details["approval"]["approved_by"] == "bob" and "worthiness" not in rec.details
    assert len(azure.arm.job_puts) == 1
    assert azure.ledger_spec.open().get_model(MODEL).flights["retrain"].status == "submitted"
