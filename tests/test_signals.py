"""Every published sample is a test case, plus the variations its README says a parser must handle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from handlers.envelopes import parse_body, to_signal, workspace_key
from handlers.errors import InvalidInput
from handlers.signals import BlobCreated, DriftDetected, Ignored, ModelDeployed, ModelRegistered, RunFinished
from tests.builders import WORKSPACE, breach_event, cloud, drift_event, event, run_event
from tests.conftest import load_sample, sample_files

OURS = frozenset({workspace_key(WORKSPACE)})


def signal_of(raw: Any) -> Any:
    [env] = parse_body(json.dumps(raw))
    return to_signal(env, OURS)


EXPECTED = {
    "DeadLetter.Microsoft.Storage.BlobCreated.eventgrid.json": BlobCreated,  # a dead-letter record: its event, read as such
    "Microsoft.Storage.BlobCreated.eventgrid.json": BlobCreated,
    "Microsoft.EventGrid.SubscriptionValidationEvent.eventgrid.json": Ignored,
    "Microsoft.MachineLearningServices.DatasetDriftDetected.eventgrid.json": DriftDetected,
    "Microsoft.MachineLearningServices.ModelDeployed.eventgrid.json": ModelDeployed,
    "Microsoft.MachineLearningServices.ModelRegistered.eventgrid.json": ModelRegistered,
    "Microsoft.MachineLearningServices.RunCompleted.eventgrid.json": RunFinished,
    "Microsoft.MachineLearningServices.RunStatusChanged.eventgrid.json": RunFinished,
}


def test_every_published_sample_is_covered() -> None:
    assert sorted(p.name for p in sample_files()) == sorted(EXPECTED)


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: Path(p).name.split(".eventgrid")[0])
def test_each_published_sample_parses_in_both_schemas(path: Path) -> None:
    raw = load_sample(path.name)
    as_list = raw if isinstance(raw, list) else [raw]
    eg = signal_of(as_list)
    ce = signal_of([cloud(e) if "eventType" in e else e for e in as_list])
    assert type(eg) is EXPECTED[path.name]
    assert type(ce) is type(eg)
    assert eg.trigger.event_id == ce.trigger.event_id == as_list[0]["id"]


def test_drift_sample_carries_monitor_coefficient_and_datasets() -> None:
    s = signal_of(load_sample("Microsoft.MachineLearningServices.DatasetDriftDetected.eventgrid.json"))
    assert (s.monitor, s.generation, round(s.coefficient, 4)) == ("myDriftMonitor", "v1", 0.835)
    assert s.event_data["TargetDatasetId"] == "d7e74d2e-c972-4266-b5fb-6c9c182d2a74"


def test_data_keys_are_read_case_insensitively() -> None:
    e = drift_event(coefficient=0.5)
    e["data"] = {k.lower(): v for k, v in e["data"].items()}
    s = signal_of([e])
    assert (s.monitor, s.coefficient) == ("myDriftMonitor", 0.5)
    r = run_event()
    r["data"] = {k[0].upper() + k[1:]: v for k, v in r["data"].items()}  # RunId, ExperimentName, ...
    assert signal_of([r]).run_id == "retrain-run-1"


@pytest.mark.parametrize("version", [20, "20", 20.0])
def test_model_version_may_be_a_number_or_a_string(version: Any) -> None:
    raw = load_sample("Microsoft.MachineLearningServices.ModelRegistered.eventgrid.json")
    raw[0]["data"]["ModelVersion"] = version
    assert signal_of(raw).model_version == "20"


def test_model_monitoring_breach_is_a_v2_drift_signal() -> None:
    s = signal_of([breach_event(signal="churn-data-drift", experiment="churn-monitor")])
    assert isinstance(s, DriftDetected)
    assert (s.generation, s.signal_name, s.monitor) == ("v2", "churn-data-drift", "churn-monitor")


@pytest.mark.parametrize("status", ["NotStarted", "Running", "Finalizing", "Queued"])
def test_run_status_changes_that_are_not_finished_are_noise(status: str) -> None:
    s = signal_of([run_event(status=status)])
    assert isinstance(s, Ignored) and "not a finished run" in s.reason


def test_completed_status_change_defers_to_run_completed() -> None:
    s = signal_of([run_event(status="Completed")])
    assert isinstance(s, Ignored) and "RunCompleted" in s.reason


def test_failed_run_status_is_a_finished_run() -> None:
    s = signal_of([run_event(status="Failed")])
    assert isinstance(s, RunFinished) and s.status == "failed" and not s.succeeded


def test_child_steps_are_recognised() -> None:
    sample = signal_of(load_sample("Microsoft.MachineLearningServices.RunCompleted.eventgrid.json"))
    step = signal_of(
        [run_event(run_id="step-1", properties={"azureml.pipelinerunid": "parent-1", "azureml.nodeid": "n1"})]
    )
    top = signal_of([run_event(run_id="parent-1", properties={"azureml.pipelinerunid": "parent-1"})])
    assert sample.is_child and step.is_child and not top.is_child


def test_event_from_a_foreign_workspace_is_ignored_with_reason() -> None:
    s = signal_of([drift_event(topic=WORKSPACE.replace("{workspace-name}", "someone-else"))])
    assert isinstance(s, Ignored) and "not a workspace this service is configured for" in s.reason


def test_workspace_match_ignores_case_and_slashes() -> None:
    s = signal_of([drift_event(topic=WORKSPACE.upper() + "/")])
    assert isinstance(s, DriftDetected)


def test_unknown_event_type_is_ignored_with_reason() -> None:
    s = signal_of([event("Microsoft.Storage.BlobDeleted", {"url": "x"})])
    assert isinstance(s, Ignored) and "Microsoft.Storage.BlobDeleted" in s.reason


def test_single_event_object_is_accepted_like_a_batch_of_one() -> None:
    raw = load_sample("DeadLetter.Microsoft.Storage.BlobCreated.eventgrid.json")
    assert isinstance(raw, dict)
    [env] = parse_body(json.dumps(raw))
    assert env.event_id == raw["id"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "non-empty JSON array"),
        (b"[1]", "must be a JSON object"),
        (json.dumps([{"eventType": "x"}]).encode(), "missing 'id'"),
        (json.dumps([{"specversion": "1.0", "id": "1"}]).encode(), "'type'"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(body: bytes, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        parse_body(body)


def test_data_as_a_json_string_is_decoded() -> None:
    e = drift_event()
    e["data"] = json.dumps(e["data"])
    assert isinstance(signal_of([e]), DriftDetected)
