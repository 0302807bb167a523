"""DESIGN guarantee 7, tried as an attacker with a workspace account (or a function key) would: nothing
that arrives steers the service's identity beyond what the policy allows. Each observation of issue
9, through the local host on SQLite, now gives the safe answer; and the service's own runs
still deploy, through the real Azure ML SDK against the fake ARM. What a manual request may carry
(idempotency keys, numbers, inputs) and who may send it: tests/test_trust_manual.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from handlers.policy_file import parse_policy
from tests.azure_world import DRIFT_SAMPLE, ENDPOINT, MODEL, AzureWorld, in_workspace
from tests.builders import ML, breach_event, drift_event, event, run_event
from tests.conftest import REPO
from tests.ledgers import LedgerSpec
from tests.world import App

RUN_COMPLETED = ML + "RunCompleted"
RUN_STATUS = ML + "RunStatusChanged"
ALERT = json.loads((REPO / "examples" / "events" / "alert.common-schema.json").read_text())
OTHER_WORKSPACE = (
    "/subscriptions/00000000-0000-0000-0000-00000000beef/resourceGroups/theirs"
    "/providers/Microsoft.MachineLearningServices/workspaces/theirs"
)


def forged_run(run_id: str = "my-own-run", experiment: str = "my-own-experiment", **tags: str) -> dict[str, Any]:
    return run_event(
        run_id=run_id,
        experiment=experiment,
        tags={"retrain_decision": "re-1234567890abcdef", "retrain_model": MODEL, "r2_score": "0.99", **tags},
        event_id=f"forged-{run_id}",
    )


# --------------------------------------------------------------------------- 1. forged provenance


def test_a_run_tagged_like_ours_in_any_experiment_is_a_recorded_skip_and_nothing_is_deployed(app: App) -> None:
    status, _ = app.deliver("/api/events", [forged_run()])
    assert status == 200
    [rec] = app.decisions_of("forged-my-own-run", RUN_COMPLETED)
    assert (rec.action, rec.outcome, rec.details.get("provenance")) == ("none", "skipped", "unverified")
    assert "the ledger holds no retraining decision of that id whose job is my-own-run" in rec.reason
    assert "candidates.experiments" in rec.reason  # what the policy would need
    assert app.ledger.get_model(MODEL).flights == {}


def test_a_forged_run_in_a_candidate_experiment_is_judged_as_a_candidate_never_as_ours(app: App) -> None:
    """The policy admits runs of diabetes-retrain as candidates: the forged tags buy nothing more."""
    app.deliver("/api/events", [forged_run(run_id="in-candidates", experiment="diabetes-retrain")])
    [rec] = app.decisions_of("forged-in-candidates", RUN_COMPLETED)
    assert rec.action == "deploy" and rec.reason.startswith("candidate run of experiment 'diabetes-retrain'")


@pytest.mark.parametrize(
    ("status", "experiment", "says"),
    [
        ("Running", "churn-monitor", "only a monitor run that completed counts"),
        # a hand-made run in the monitor's own experiment: a monitor that breaches completes its run
        ("Failed", "churn-monitor", "is failed: only a monitor run that completed counts"),
        ("Canceled", "churn-monitor", "is canceled: only a monitor run that completed counts"),
        ("Completed", "my-own-experiment", "no model in the policy listens to drift monitor 'my-own-experiment'"),
    ],
)
def test_a_stray_breach_tag_is_a_recorded_skip(app: App, status: str, experiment: str, says: str) -> None:
    app.deliver("/api/events", [breach_event(experiment=experiment, status=status, event_id=f"breach-{status}")])
    [rec] = app.decisions_of(f"breach-{status}", RUN_STATUS)
    assert rec.outcome == "skipped" and says in rec.reason
    assert all(r.action == "none" for r in app.ledger.decisions())


# --------------------------------------------------------------------------- 2. training data from events


@pytest.mark.parametrize(
    "value",
    [
        "https://attacker.example/poison.csv",
        f"azureml:/{OTHER_WORKSPACE}/data/x/versions/1",
        "azureml://registries/theirs/data/poison/versions/1",
        f"azureml:/{OTHER_WORKSPACE}/datastores/workspaceblobstore/paths/poison.csv".replace(":/", "://", 1),
        "azureml://datastores/workspaceblobstore/paths/../../etc",
    ],
)
def test_a_url_from_event_data_never_becomes_training_data(app: App, value: str) -> None:
    raw = drift_event(event_id="poison")
    raw["data"]["TargetDatasetId"] = value
    app.deliver("/api/events", [raw])
    [rec] = app.decisions_of("poison")
    assert (rec.action, rec.outcome, rec.details) == ("none", "skipped", {"input": "training_data"})
    assert "not a data asset or datastore path of this workspace" in rec.reason
    assert "models.sklearn_regression_model.retrain.inputs.training_data.allowed_prefixes" in rec.reason


@pytest.mark.parametrize(
    "value", ["azureml:target-ds:3", "target-ds@latest", "azureml://datastores/workspaceblobstore/paths/d/x.csv"]
)
def test_a_reference_into_the_workspace_from_event_data_is_used(app: App, value: str) -> None:
    raw = drift_event(event_id="fine")
    raw["data"]["TargetDatasetId"] = value
    app.deliver("/api/events", [raw])
    [rec] = app.decisions_of("fine")
    assert rec.outcome == "planned"
    assert rec.details["rendered"]["inputs"]["training_data"]["from"] == "event.TargetDatasetId"


def test_a_prefix_the_policy_allows_is_used_as_it_is() -> None:
    from handlers.decisions import decide
    from handlers.envelopes import parse_body, to_signal
    from handlers.plans import Retrain
    from tests.builders import SCOPE

    policy = parse_policy(
        """
models:
  m:
    drift: {monitors: [myDriftMonitor]}
    retrain:
      pipeline: p:1
      inputs:
        data: {type: uri_file, from_event: TargetDatasetId, allowed_prefixes: ["https://ours.blob.core.windows.net/in/"]}
"""
    )
    raw = drift_event()
    raw["data"]["TargetDatasetId"] = "https://ours.blob.core.windows.net/in/today.csv"
    [d] = decide(to_signal(parse_body(json.dumps([raw]))[0], SCOPE), policy, SCOPE)
    assert isinstance(d, Retrain) and d.job.inputs["data"]["value"] == "https://ours.blob.core.windows.net/in/today.csv"


# --------------------------------------------------------------------------- 3. alerts about another workspace


def test_an_alert_about_another_workspace_is_a_recorded_skip(app: App) -> None:
    alert = copy.deepcopy(ALERT)
    alert["data"]["essentials"]["alertTargetIDs"] = [OTHER_WORKSPACE]
    status, body = app.post("/api/alerts", alert)
    assert status == 200
    [rec] = body["decisions"]
    assert (rec["action"], rec["outcome"]) == ("none", "skipped")
    assert "neither this service's workspace nor a resource in it" in rec["reason"]
    assert "models.sklearn_regression_model.alert_targets" in rec["reason"]


def test_an_alert_about_an_endpoint_of_the_workspace_counts(app: App) -> None:
    alert = copy.deepcopy(ALERT)
    workspace = alert["data"]["essentials"]["alertTargetIDs"][0]
    alert["data"]["essentials"]["alertTargetIDs"] = [f"{workspace}/onlineEndpoints/diabetes-endpoint"]
    status, body = app.post("/api/alerts", alert)
    assert status == 200 and [d["outcome"] for d in body["decisions"]] == ["planned"]


# --------------------------------------------------------------------------- 4. thresholds fail closed


@pytest.mark.parametrize(("coefficient", "shown"), [("NaN", "'NaN'"), (True, "True"), (None, "no DriftCoefficient")])
def test_a_missing_or_non_numeric_coefficient_is_a_skip_naming_the_field(
    app: App, coefficient: Any, shown: str
) -> None:
    raw = drift_event(event_id="no-number")
    if coefficient is None:
        del raw["data"]["DriftCoefficient"]
    else:
        raw["data"]["DriftCoefficient"] = coefficient
    app.deliver("/api/events", [raw])
    [rec] = app.decisions_of("no-number")
    assert (rec.outcome, rec.details) == ("skipped", {"field": "DriftCoefficient"})
    assert f"the drift event's DriftCoefficient is not a number (it has {shown})" in rec.reason
    assert "models.sklearn_regression_model.drift.min_coefficient" in rec.reason


# --------------------------------------------------------------------------- our own runs still deploy


def test_a_run_this_service_submitted_deploys_end_to_end_and_a_forged_twin_does_not(tmp_path: Path) -> None:
    """No candidates in the policy: only the ledger's word makes a run a candidate."""
    policy = parse_policy(
        (REPO / "examples" / "policy.yaml").read_text().replace("experiments: [diabetes-retrain]", "experiments: []")
    )
    azure = AzureWorld(tmp_path, LedgerSpec("sqlite", str(tmp_path / "l.db")), policy=policy)
    [retrain] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert retrain.outcome == "submitted"
    job = str(retrain.job["name"])  # type: ignore[index]
    submitted_tags = azure.arm.jobs[job]["properties"]["tags"]
    azure.arm.set_job_status(job, "Completed")
    azure.arm.add_step(job, "evaluate_model", metrics={"r2_score": 0.61})  # logged with MLflow, as steps do

    forged = run_event(
        run_id="their-run", tags={**submitted_tags, "r2_score": "0.99"}, topic=azure.settings.workspace_id
    )
    [skipped] = azure.deliver(forged).decisions
    assert skipped.outcome == "skipped" and skipped.details["provenance"] == "unverified"
    assert azure.arm.writes() == [next(w for w in azure.arm.writes() if w.path.startswith("jobs/"))]  # the job only

    ours = run_event(run_id=job, tags=submitted_tags, topic=azure.settings.workspace_id)  # the run's own tags
    [deploy] = azure.deliver(ours).decisions
    assert (deploy.action, deploy.outcome) == ("deploy", "submitted")
    assert deploy.reason.startswith(f"retraining run {job} completed")
    assert any(w.path.startswith(f"onlineEndpoints/{ENDPOINT}/deployments/") for w in azure.arm.writes())
    azure.provisioned()


def test_a_breach_from_a_named_monitors_finished_run_still_retrains(app: App) -> None:
    app.deliver("/api/events", [breach_event(event_id="real-breach")])
    [rec] = app.decisions_of("real-breach", RUN_STATUS)
    assert (rec.model, rec.action, rec.outcome) == ("churn-classifier", "retrain", "planned")
    # the dry run reads no workspace: its record says the breach's run was not read back, rather than pretend
    assert rec.details["breach"]["checked"] is False and "not read back" in rec.details["breach"]["unread"]


def test_a_model_registered_event_with_forged_tags_only_ever_skips(app: App) -> None:
    raw = event("ModelRegistered", {"ModelName": MODEL, "ModelVersion": 9, "ModelTags": {"retrain_decision": "x"}})
    status, body = app.deliver("/api/events", [raw])
    assert status == 200 and [d["outcome"] for d in body["results"][0]["decisions"]] == ["skipped"]
