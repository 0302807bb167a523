"""The Azure ML backend end to end: events through RetrainService and the real SDK to a fake ARM.

Nothing here pretends a call happened: ``MLClient`` (built by ``AzureMLActions.from_settings``)
sends its real requests to :class:`tests.fake_arm.FakeArm`, and the tests read what it received.
The retry sleep and clock are a :class:`FakeClock`: no test waits.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Iterator
from typing import Any

import azure.ai.ml.exceptions as ml_exceptions
import azure.core.exceptions as core_exceptions
import pytest
from azure.ai.ml import MLClient

from function_app.adapters.azure_errors import is_transient, translate
from handlers.errors import PermanentError, TransientError
from handlers.jobnames import job_name as keyed_job_name
from handlers.signals import ManualRequest, Trigger
from tests.azure_world import (
    DATASET,
    DRIFT_SAMPLE,
    JOB_NAME_KEY,
    MODEL,
    RG,
    SUB,
    WORKSPACE_ID,
    WS,
    AzureWorld,
    DiesAfterActing,
    WorkerDied,
    in_workspace,
)
from tests.builders import training_plan, with_retrain
from tests.fake_http import FakeCredential

# --------------------------------------------------------------------------- retraining


def test_sample_drift_event_submits_exactly_the_expected_pipeline_job(azure: AzureWorld) -> None:
    raw = in_workspace(DRIFT_SAMPLE)
    [rec] = azure.deliver(raw).decisions
    assert (rec.action, rec.outcome, rec.model) == ("retrain", "submitted", MODEL)
    job_name = rec.job["name"]  # type: ignore[index]
    # from the decision key, under the service's secret (RETRAIN_JOB_NAME_KEY)
    assert job_name == keyed_job_name(JOB_NAME_KEY.encode(), MODEL, rec.id)
    assert rec.id.split("-", 1)[1] not in job_name  # not the public digest a workspace user can compute

    [put] = azure.arm.job_puts
    assert put.path == f"jobs/{job_name}"
    props = put.body["properties"]
    assert props["jobType"] == "Pipeline"
    assert props["componentId"] == azure.arm.arm_id("components", "diabetes-retrain", "versions", "3")
    assert props["computeId"] == azure.arm.arm_id("computes", "cpu-cluster")
    assert props["experimentName"] == "diabetes-retrain"
    assert props["inputs"] == {
        "training_data": {"jobInputType": "mltable", "uri": azure.arm.arm_id("data", DATASET, "versions", "2")},
        "learning_rate": {"jobInputType": "literal", "value": "0.01"},
        "max_epochs": {"jobInputType": "literal", "value": "20"},
    }
    assert props["tags"] == {
        "retrain_service": "retrain-service",
        "retrain_model": MODEL,
        "retrain_decision": rec.id,
        "retrain_trigger": f"DatasetDriftDetected:{raw['id']}",
    }
    assert props["displayName"].startswith(f"retrain {MODEL}: data drift monitor myDriftMonitor")
    assert props["properties"] == {}
    assert (
        rec.job["url"]
        == f"https://ml.azure.com/runs/{job_name}?wsid={WORKSPACE_ID}&tid=00000000-0000-0000-0000-0000000000bb"
    )  # type: ignore[index]
    assert azure.clock.slept == [] and azure.arm.sdk_sleeps == []
    assert azure.service.ledger.get_model(MODEL).flights["retrain"].job == job_name


def test_redelivered_drift_event_submits_no_second_job(azure: AzureWorld) -> None:
    raw = in_workspace(DRIFT_SAMPLE)
    first = azure.deliver(raw)
    again = azure.deliver(raw)
    assert again.status == "duplicate" and again.decisions[0].job == first.decisions[0].job
    assert len(azure.arm.job_puts) == 1 and len(azure.arm.jobs) == 1


@pytest.mark.both_ledgers
def test_redelivery_after_a_crash_between_submit_and_confirm_adopts_the_job(azure: AzureWorld) -> None:
    raw = in_workspace(DRIFT_SAMPLE)
    with pytest.raises(WorkerDied):
        azure.deliver(raw, azure.new_worker(DiesAfterActing(azure.actions)))
    [submitted] = list(azure.arm.jobs)
    assert azure.decision(azure.arm.jobs[submitted]["properties"]["tags"]["retrain_decision"]).outcome == "reserved"  # type: ignore[union-attr]

    with pytest.raises(TransientError):  # while the dead worker's lease runs, the event is someone else's
        azure.deliver(raw)
    azure.now.advance(minutes=2)
    [rec] = azure.deliver(raw, azure.new_worker()).decisions
    assert (rec.outcome, rec.job["name"], rec.details["adopted"]) == ("submitted", submitted, True)  # type: ignore[index]
    assert len(azure.arm.job_puts) == 1 and list(azure.arm.jobs) == [submitted]
    assert azure.service.ledger.get_model(MODEL).flights["retrain"].job == submitted


def test_a_job_submitted_concurrently_between_look_and_put_is_adopted(azure: AzureWorld) -> None:
    def another_instance_submits() -> None:  # the same name, but it resolved the dataset to version 1
        pending = azure.arm.job_puts[-1].body["properties"]
        theirs = copy.deepcopy(pending)
        theirs["inputs"]["training_data"]["uri"] = azure.arm.arm_id("data", DATASET, "versions", "1")
        name = azure.arm.job_puts[-1].path.removeprefix("jobs/")
        azure.arm.jobs[name] = azure.arm._job_resource(name, theirs, "Running")

    azure.arm.before("PUT", r"^jobs/", another_instance_submits)
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert (rec.outcome, rec.details["adopted"]) == ("submitted", True)
    assert [c.status for c in azure.arm.job_puts] == [400] and len(azure.arm.jobs) == 1


def test_a_pipeline_label_is_resolved_through_the_sdk(azure: AzureWorld) -> None:
    azure.arm.add_component("churn-train", "1", inputs={"training_data": "uri_folder"})
    azure.arm.add_component("churn-train", "2", inputs={"training_data": "uri_folder"})
    azure.arm.add_data("churn-training", "4", kind="uri_folder")
    request = ManualRequest(Trigger("http", "req-1", "ManualRequest.retrain"), "churn-classifier", "retrain", "test")
    rec = azure.service.manual(request)
    assert rec.outcome == "submitted"
    [listing] = azure.arm.requests_to("GET", r"^components/churn-train/versions$")
    assert (listing.query["$orderBy"], listing.query["$top"]) == ("createdtime desc", "1")
    props = azure.arm.job_puts[0].body["properties"]
    assert props["componentId"] == azure.arm.arm_id("components", "churn-train", "versions", "2")
    assert props["inputs"]["training_data"]["uri"] == azure.arm.arm_id("data", "churn-training", "versions", "4")


def test_a_local_input_path_is_refused_rather_than_uploaded(azure: AzureWorld) -> None:
    plan = training_plan("uri_folder", "data/train")
    with pytest.raises(PermanentError, match="'data/train', a local path; the service uploads nothing"):
        azure.actions.submit_retrain(plan)
    assert azure.arm.writes() == []


# --------------------------------------------------------------------------- transient and permanent


def test_throttled_submission_is_retried_after_its_retry_after(azure: AzureWorld) -> None:
    azure.arm.fail(429, method="PUT", path=r"^jobs/", headers={"Retry-After": "2"})
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "submitted"
    assert azure.clock.slept == [2.0]
    assert [c.status for c in azure.arm.job_puts] == [429, 201]


def test_a_run_of_503s_ends_as_a_transient_error_within_the_deadline(azure: AzureWorld) -> None:
    start = azure.clock.now
    azure.arm.fail(503, method="GET", path=r"^components/", times=1000)
    raw = in_workspace(DRIFT_SAMPLE)
    with pytest.raises(TransientError, match=r"HTTP 503.*25 s budget"):
        azure.deliver(raw)
    assert azure.clock.now - start <= azure.settings.deadline_seconds
    assert len(azure.arm.requests_to("GET", r"^components/")) == len(azure.clock.slept) + 1 > 3
    assert azure.arm.job_puts == []

    azure.arm.faults.clear()  # Event Grid delivers it again once Azure is back
    [rec] = azure.deliver(raw).decisions
    assert rec.outcome == "submitted" and len(azure.arm.job_puts) == 1


def test_a_webhook_batch_shares_one_deadline_across_its_events(azure: AzureWorld) -> None:
    """The first event's job is throttled for 20 s, then the second event's deployment meets 503s:
    it gets the 5 s left of the delivery's 25, so the batch answers 503 inside Event Grid's 30 s."""
    import main
    from function_app import runtime
    from function_app.localhost import Host
    from tests.conftest import Client

    # without the worthiness check, which reads the endpoint (its served champion) before the job is submitted
    azure.policy = with_retrain({"worthiness": False})
    azure.worker = azure.new_worker()
    azure.arm.fail(429, method="PUT", path=r"^jobs/", headers={"Retry-After": "20"})
    azure.arm.fail(503, method="GET", path=r"^onlineEndpoints/", times=1000)
    start = azure.clock.now
    runtime.set_retrainer(azure.worker)
    try:
        status, _, body = Client(Host(main.app)).call(
            "POST", "/api/events", [in_workspace(DRIFT_SAMPLE), azure.finished_run(r2="0.61")]
        )
    finally:
        runtime.set_retrainer(None)
    assert status == 503 and "budget of this attempt is spent" in body["error"]
    assert azure.clock.now - start <= azure.settings.deadline_seconds
    assert azure.clock.slept[0] == 20.0 and len(azure.arm.requests_to("GET", r"^onlineEndpoints/")) >= 2
    assert [c.status for c in azure.arm.job_puts] == [429, 201]  # the first event's job was submitted


def test_timeouts_count_against_the_deadline(azure: AzureWorld) -> None:
    start = azure.clock.now
    azure.arm.time_out("GET", r"^components/", times=1000, seconds=6.0)
    with pytest.raises(TransientError, match="ServiceResponseTimeoutError"):
        azure.deliver(in_workspace(DRIFT_SAMPLE))
    assert sum(azure.clock.slept) < azure.settings.deadline_seconds
    assert azure.clock.now - start <= azure.settings.deadline_seconds + 6.0  # the last attempt may start near it


def test_a_missing_component_fails_the_decision_naming_the_component(azure: AzureWorld) -> None:
    del azure.arm.components[("diabetes-retrain", "3")]
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "failed"
    assert (
        "pipeline component 'diabetes-retrain:3' not found in workspace ws-retrain; "
        "register it or fix models.sklearn_regression_model.retrain.pipeline"
    ) in rec.reason
    assert azure.arm.job_puts == [] and azure.clock.slept == []
    state = azure.service.ledger.get_model(MODEL)
    assert "retrain" not in state.flights and state.last_retrain_at is None  # the cooldown is given back


def test_the_sdks_own_retries_are_off_so_the_budget_is_tenacitys(azure: AzureWorld) -> None:
    azure.arm.fail(503, method="GET", path=r"^components/")
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "submitted"
    assert len(azure.arm.requests_to("GET", r"^components/")) == 2  # one failure, one retry: ours
    assert len(azure.clock.slept) == 1 and azure.arm.sdk_sleeps == []

    # Built with its defaults, the SDK retries by itself underneath, outside the budget's sight.
    default = MLClient(FakeCredential(), SUB, RG, WS, transport=azure.arm, enable_telemetry=False)
    azure.arm.fail(503, method="GET", path=r"^components/")
    default.components.get("diabetes-retrain", version="3")
    assert len(azure.arm.requests_to("GET", r"^components/")) == 4 and len(azure.clock.slept) == 1


class _Answer400:
    """Just what azure-core's errors read from a response."""

    status_code, reason, headers, url = 400, "Bad Request", {}, "https://management.azure.com/x"
    request = None

    def text(self) -> str:
        return json.dumps({"error": {"code": "UserError", "message": "bad"}})


def _instances(module: Any) -> Iterator[BaseException]:
    """One instance of every exception class a module defines, built with placeholder arguments."""
    placeholders: dict[str, Any] = {"response": _Answer400(), "history": []}
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if not issubclass(cls, Exception) or not cls.__module__.startswith("azure."):
            continue
        params = inspect.signature(cls.__init__).parameters.values()
        args = {
            p.name: placeholders.get(p.name, 1 if p.name.endswith("_number") else "x")
            for p in params
            if p.name != "self"
            and p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        if "message" in [p.name for p in params] and issubclass(cls, ml_exceptions.MlException):
            args.setdefault("message", "x")
            args.setdefault("no_personal_data_message", "x")
        yield cls(**args)


def test_every_error_the_sdk_raises_is_translated_to_transient_or_permanent() -> None:
    errors = [*_instances(core_exceptions), *_instances(ml_exceptions)]
    assert len(errors) > 40
    transient = {type(e).__name__ for e in errors if is_transient(e)}
    assert transient == {  # a ClientAuthenticationError without a status is a misconfigured identity: permanent
        "IncompleteReadError",
        "ServiceRequestError",
        "ServiceRequestTimeoutError",
        "ServiceResponseError",
        "ServiceResponseTimeoutError",
    }
    for error in errors:
        if isinstance(error, core_exceptions.AzureError):  # what the adapter catches: every SDK error is one
            as_azure_ml = translate(error, "x", service="Azure ML", refused="grant a role")  # as the backend does
            assert isinstance(as_azure_ml, TransientError if is_transient(error) else PermanentError)
    sdk_errors = [cls for _, cls in inspect.getmembers(ml_exceptions, inspect.isclass) if issubclass(cls, Exception)]
    assert all(
        issubclass(cls, core_exceptions.AzureError) for cls in sdk_errors if cls.__module__.startswith("azure.ai.ml")
    )
