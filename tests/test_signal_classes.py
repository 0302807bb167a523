"""Signal classes of v2 model monitoring and the worthiness check, end to end: breach events through the
service and the real azure-ai-ml SDK (and the MLflow REST client) to the fake workspace, which holds the
monitor run's steps, the champion's job and its data asset versions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from function_app.adapters import permissions
from function_app.adapters.azureml import lineage
from handlers.errors import TransientError
from handlers.policy import Policy
from tests import rbac, rbac_model
from tests.azure_world import DATASET, DRIFT_SAMPLE, ENDPOINT, MODEL, WORKSPACE_ID, AzureWorld, in_workspace
from tests.builders import EXAMPLE_POLICY, ours, run_event, with_classes
from tests.monitoring import BREACH, MONITOR, breach, monitor_run

CLASSES = {"feature-drift": "retrain", "accuracy": "retrain_now", "data-quality": "veto", "prediction-drift": "record"}


def policy(classes: dict[str, str] | None = None, **retrain: Any) -> Policy:
    return with_classes(classes or CLASSES, **retrain)


def use(azure: AzureWorld, p: Policy) -> None:
    """The world's workers run ``p`` from now on (the same ledger and workspace)."""
    azure.policy = p
    azure.worker = azure.new_worker()


def ended(azure: AzureWorld, rec: Any) -> None:
    """The retraining run of ``rec`` failed (its event came): the model's slot is free, its cooldown stands."""
    job = rec.job["name"]
    [done] = azure.deliver(
        run_event(run_id=job, tags=ours(MODEL, rec.id), status="Failed", topic=WORKSPACE_ID)
    ).decisions
    assert done.outcome == "skipped" and azure.flights() == {}


def vetoed_notes(azure: AzureWorld) -> list[Any]:
    return [
        e.notification
        for e in azure.ledger.notifications(dead=False, limit=50)
        if e.notification.type.endswith(".vetoed")
    ]


# --------------------------------------------------------------------------- signal classes


def test_a_drift_breach_retrains_and_its_record_names_the_signal_and_its_class(azure: AzureWorld) -> None:
    use(azure, policy())
    steps = monitor_run(azure, "monitor-run-1", "feature-drift", quiet=("data-quality",))
    [rec] = azure.deliver(breach(azure, "feature-drift", steps["feature-drift"])).decisions
    assert (rec.action, rec.outcome) == ("retrain", "submitted")
    assert rec.details["signal"] == {
        "signal": "feature-drift",
        "class": "retrain",
        "monitor": MONITOR,
        "run": steps["feature-drift"],
    }
    # the monitor run was read through MLflow: the data-quality step passed, so nothing vetoed it
    assert rec.details["veto"] == {
        "run": "monitor-run-1",
        "checked": ["data-quality"],
        "breached": [],
        "found": ["feature-drift"],
    }
    assert len(azure.arm.job_puts) == 1
    assert "signal 'feature-drift', class retrain" in rec.reason


@pytest.mark.both_ledgers  # the slot, cooldown and budget given back: a guard's write
def test_a_data_quality_breach_in_the_same_monitor_run_vetoes_the_retrain_and_is_published(
    azure: AzureWorld,
) -> None:
    use(azure, policy())
    steps = monitor_run(azure, "monitor-run-2", "feature-drift", "data-quality")
    [rec] = azure.deliver(breach(azure, "feature-drift", steps["feature-drift"])).decisions
    assert (rec.action, rec.outcome) == ("retrain", "skipped")
    assert "'data-quality' of class veto breached in the same monitor run (monitor-run-2)" in rec.reason
    assert rec.details["veto"]["breached"] == ["data-quality"] and rec.details["incident"] == "veto"
    assert azure.arm.job_puts == []
    # nothing ran: the slot, the cooldown and the budget are as they were
    state = azure.ledger.get_model(MODEL)
    assert state.flights == {} and state.last_retrain_at is None and state.budget_used == 0
    [note] = vetoed_notes(azure)
    assert note.type == "retrain.decision.retrain.vetoed" and note.data["id"] == rec.id


def test_a_veto_breached_in_a_nested_signal_pipeline_vetoes_the_retrain(azure: AzureWorld) -> None:
    # Each signal as a pipeline component of the monitor run: its evaluation step is a step of that component's
    # run (mlflow.parentRunId), not of the monitor run itself.
    use(azure, policy())
    azure.arm.add_job("monitor-run-11", experiment=MONITOR, outputs=())
    evaluated = {}
    for signal in ("feature-drift", "data-quality"):
        component = azure.arm.add_step("monitor-run-11", f"{signal}_signal_monitor")
        text = f"The signal '{signal}' has failed due to one or more features violating metric thresholds."
        evaluated[signal] = azure.arm.add_step(component, "evaluate_metric_thresholds", tags={BREACH: text})
    [rec] = azure.deliver(breach(azure, "feature-drift", evaluated["feature-drift"])).decisions
    assert (rec.action, rec.outcome) == ("retrain", "skipped")
    assert rec.details["veto"]["run"] == "monitor-run-11" and rec.details["veto"]["breached"] == ["data-quality"]
    assert azure.arm.job_puts == []


def test_a_monitor_run_with_more_sub_pipelines_than_are_read_is_not_retrained_on(azure: AzureWorld) -> None:
    use(azure, policy())
    steps = monitor_run(azure, "monitor-run-12", "feature-drift")
    for i in range(lineage.MAX_SEARCHES):
        azure.arm.add_step("monitor-run-12", f"preprocess-{i}")
    [rec] = azure.deliver(breach(azure, "feature-drift", steps["feature-drift"])).decisions
    assert (rec.action, rec.outcome) == ("retrain", "skipped")
    assert f"has more than {lineage.MAX_SEARCHES} steps" in rec.details["veto"]["unread"]
    assert azure.arm.job_puts == []


def test_a_breach_whose_monitor_run_is_still_running_waits_for_its_veto_signals(azure: AzureWorld) -> None:
    use(azure, policy())
    steps = monitor_run(azure, "monitor-run-9", "feature-drift")
    azure.arm.mlflow_runs["monitor-run-9"]["info"]["status"] = "RUNNING"  # the data-quality step is still going
    raw = breach(azure, "feature-drift", steps["feature-drift"])
    with pytest.raises(TransientError, match="monitor run monitor-run-9 is still running"):
        azure.deliver(raw)  # Event Grid delivers it again later; the reservation waits for it
    assert azure.arm.job_puts == [] and azure.flights()["retrain"].status == "reserved"
    text = "The signal 'data-quality' has failed due to one or more features violating metric thresholds."
    azure.arm.add_step("monitor-run-9", "data-quality_evaluate", tags={BREACH: text})
    azure.arm.mlflow_runs["monitor-run-9"]["info"]["status"] = "FINISHED"
    azure.now.now += timedelta(minutes=2)  # past the claim's lease: the redelivery resumes the reservation
    [rec] = azure.deliver(raw).decisions
    assert rec.outcome == "skipped" and rec.details["veto"]["breached"] == ["data-quality"]
    assert azure.arm.job_puts == [] and azure.flights() == {}


def test_a_monitor_run_that_never_ends_is_waited_for_six_hours_then_not_retrained_on(azure: AzureWorld) -> None:
    use(azure, policy())
    steps = monitor_run(azure, "monitor-run-10", "feature-drift")
    azure.arm.mlflow_runs["monitor-run-10"]["info"]["status"] = "RUNNING"
    azure.arm.mlflow_runs["monitor-run-10"]["info"]["start_time"] = int(azure.arm.clock.now * 1000)
    raw = breach(azure, "feature-drift", steps["feature-drift"])
    with pytest.raises(TransientError):
        azure.deliver(raw)
    azure.now.now += timedelta(hours=6, minutes=1)  # the fake's clock moves with it
    [rec] = azure.deliver(raw).decisions
    assert (
        rec.outcome == "skipped"
        and rec.details["veto"]["unread"] == "monitor run monitor-run-10 is still running after 6h"
    )
    assert azure.arm.job_puts == [] and azure.flights() == {}


def test_a_breach_whose_monitor_run_cannot_be_read_is_not_retrained_on(azure: AzureWorld) -> None:
    use(azure, policy())
    gone = monitor_run(azure, "monitor-run-gone", "feature-drift")["feature-drift"]
    del azure.arm.mlflow_runs[gone]  # run history holds the step; MLflow lost its run
    [rec] = azure.deliver(breach(azure, "feature-drift", gone)).decisions
    assert (rec.action, rec.outcome) == ("retrain", "skipped")
    assert "could not be read to check its veto signal(s) 'data-quality'" in rec.reason
    assert rec.details["veto"]["unread"] == f"MLflow has no run {gone}"
    assert azure.arm.job_puts == [] and azure.ledger.get_model(MODEL).budget_used == 0


def test_a_veto_breach_itself_is_recorded_and_published_as_an_incident(azure: AzureWorld) -> None:
    use(azure, policy())
    steps = monitor_run(azure, "monitor-run-3", "data-quality")
    [rec] = azure.deliver(breach(azure, "data-quality", steps["data-quality"])).decisions
    assert rec.outcome == "skipped" and rec.details["signal"]["class"] == "veto"
    assert "is a veto (models.sklearn_regression_model.drift.classes)" in rec.reason
    assert [n.data["id"] for n in vetoed_notes(azure)] == [rec.id]
    assert azure.arm.job_puts == []


def test_a_record_class_breach_is_recorded_and_never_acted_on(azure: AzureWorld) -> None:
    use(azure, policy())
    steps = monitor_run(azure, "monitor-run-4", "prediction-drift")
    [rec] = azure.deliver(breach(azure, "prediction-drift", steps["prediction-drift"])).decisions
    assert rec.outcome == "skipped" and rec.details["signal"]["class"] == "record"
    assert "its class is record" in rec.reason
    assert azure.arm.job_puts == [] and vetoed_notes(azure) == []


@pytest.mark.both_ledgers  # the slot, cooldown and budget given back: a guard's write
def test_a_performance_breach_retrains_past_the_cooldown_but_not_past_the_budget(azure: AzureWorld) -> None:
    use(azure, policy(daily_budget=2))
    first = monitor_run(azure, "monitor-run-5", "feature-drift")
    [started] = azure.deliver(breach(azure, "feature-drift", first["feature-drift"])).decisions
    assert started.outcome == "submitted"
    ended(azure, started)

    second = monitor_run(azure, "monitor-run-6", "feature-drift")
    [cooled] = azure.deliver(breach(azure, "feature-drift", second["feature-drift"])).decisions
    assert (cooled.outcome, cooled.details["guard"]) == ("skipped", "cooldown")

    third = monitor_run(azure, "monitor-run-7", "accuracy")
    [urgent] = azure.deliver(breach(azure, "accuracy", third["accuracy"])).decisions
    assert urgent.outcome == "submitted" and urgent.details["signal"]["class"] == "retrain_now"
    assert "past the cooldown, within the budget" in urgent.reason
    ended(azure, urgent)

    fourth = monitor_run(azure, "monitor-run-8", "accuracy")
    [spent] = azure.deliver(breach(azure, "accuracy", fourth["accuracy"])).decisions
    assert (spent.outcome, spent.details["guard"]) == ("skipped", "budget")
    assert len(azure.arm.job_puts) == 2


# --------------------------------------------------------------------------- worthiness


@pytest.mark.both_ledgers  # the slot, cooldown and budget given back: a guard's write
def test_a_drift_retrain_on_the_data_the_champion_was_trained_on_is_a_recorded_skip(azure: AzureWorld) -> None:
    azure.champion_trained_on("2")  # the latest version of the data asset
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert (rec.action, rec.outcome) == ("retrain", "skipped")
    assert rec.reason.startswith(
        f"not worth it: the champion {MODEL}:4 was trained on {DATASET}:2, and no newer version exists"
    )
    assert rec.details["worthiness"] == {
        "judged": True,
        "champion": f"{MODEL}:4",
        "trained_on": {DATASET: "2"},
        "latest": {DATASET: "2"},
        "newer": {},
    }
    assert azure.arm.job_puts == []
    state = azure.ledger.get_model(MODEL)
    assert state.flights == {} and state.last_retrain_at is None and state.budget_used == 0

    azure.arm.add_data(DATASET, "3")  # new data lands as a new version: now it is worth it
    [again] = azure.deliver(in_workspace(DRIFT_SAMPLE) | {"id": "drift-2"}).decisions
    assert again.outcome == "submitted" and again.details["worthiness"]["newer"] == {DATASET: "3"}
    assert len(azure.arm.job_puts) == 1


def test_the_worthiness_check_reads_the_served_champion_with_only_what_its_permissions_entry_lists(
    azure: AzureWorld,
) -> None:
    # the app's identity holds exactly what permissions.py says a retrain's checks and its submission do
    listed = [
        *permissions.OPERATIONS["AzureMLActions.retrain_facts"],
        *permissions.OPERATIONS["AzureMLActions.submit_retrain"],
    ]
    azure.arm.principal = rbac_model.Principal(
        rbac.APP_OID, "the app", (rbac_model.Grant("listed", azure.arm.ws_path, tuple(listed)),)
    )
    azure.clock.now += 3600  # past the first hour, when a refusal may be a role still settling
    azure.champion_trained_on("2")
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert azure.arm.refused == []
    assert rec.outcome == "skipped" and rec.details["worthiness"]["champion"] == f"{MODEL}:4"
    assert "notes" not in rec.details["worthiness"]  # the served version, read through the endpoint


def test_the_champion_is_the_served_version_so_newer_data_than_it_saw_is_worth_a_retrain(azure: AzureWorld) -> None:
    azure.champion_trained_on("1")  # served: trained on version 1 of the data
    azure.trained_on("5", "2")  # registered later, never deployed, trained on version 2, the latest
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "submitted"
    assert rec.details["worthiness"] == {
        "judged": True,
        "champion": f"{MODEL}:4",
        "trained_on": {DATASET: "1"},
        "latest": {DATASET: "2"},
        "newer": {DATASET: "2"},
    }
    assert len(azure.arm.job_puts) == 1


def test_a_newer_registered_version_on_older_data_does_not_make_the_served_champions_data_new(
    azure: AzureWorld,
) -> None:
    azure.champion_trained_on("2")  # served, trained on the latest data
    azure.trained_on("5", "1")  # the latest registered version, not deployed, trained on older data
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "skipped" and rec.reason.startswith(f"not worth it: the champion {MODEL}:4 was trained on")
    assert rec.details["worthiness"]["trained_on"] == {DATASET: "2"} and azure.arm.job_puts == []


def test_without_an_endpoint_serving_the_model_the_latest_version_is_judged_and_the_record_says_so(
    azure: AzureWorld,
) -> None:
    azure.trained_on("4", "2")  # the latest registered version; the endpoint serves another model
    azure.arm.add_model("other-model", "1")
    azure.arm.add_deployment(ENDPOINT, "blue", model=("other-model", "1"))
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "skipped" and rec.details["worthiness"]["champion"] == f"{MODEL}:4"
    assert rec.details["worthiness"]["notes"] == [
        f"endpoint {ENDPOINT!r} serves no version of model {MODEL} (its live deployment serves other-model:1): "
        f"the champion is taken to be its latest version, {MODEL}:4"
    ]


def test_a_champion_registered_by_a_pipeline_step_is_judged_on_its_pipelines_data_inputs(azure: AzureWorld) -> None:
    azure.arm.add_job(  # the mlops-template pattern: the pipeline reads the data, its step registers the model
        "train-pipeline-4",
        experiment="diabetes-retrain",
        inputs={"training_data": azure.arm.arm_id("data", DATASET, "versions", "1")},
    )
    step = azure.arm.add_step("train-pipeline-4", "register_model")  # Azure names its pipeline job in its properties
    azure.arm.add_model(MODEL, "4", job_name=step)
    azure.arm.add_deployment(ENDPOINT, "blue", model=(MODEL, "4"))
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "submitted"
    assert rec.details["worthiness"]["trained_on"] == {DATASET: "1"}
    assert rec.details["worthiness"]["newer"] == {DATASET: "2"}


def test_the_policy_may_turn_the_worthiness_check_off(azure: AzureWorld) -> None:
    use(azure, policy(worthiness=False))
    azure.champion_trained_on("2")
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "submitted" and "worthiness" not in rec.details
    assert "checks" not in rec.details["rendered"]


def test_a_champion_whose_lineage_cannot_be_read_is_retrained_saying_why_it_was_not_judged(
    azure: AzureWorld,
) -> None:
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions  # version 3 names no job that produced it
    assert rec.outcome == "submitted"
    assert rec.details["worthiness"] == {
        "judged": False,
        "why": f"{MODEL}:3 names no job that produced it",
        "champion": f"{MODEL}:3",
    }


def test_a_manual_retrain_is_not_second_guessed_by_the_worthiness_check(azure: AzureWorld) -> None:
    azure.champion_trained_on("2")
    rec = azure.manual(reason="the data team asked")
    assert rec.outcome == "submitted" and "worthiness" not in rec.details


@pytest.mark.parametrize(
    ("classes", "problem"),
    [
        ({"feature-drift": "retrain-now"}, "'retrain-now' is not a signal class; write one of retrain, retrain_now"),
        ({"bad name!": "veto"}, "is not a monitor signal name"),
        ({"Accuracy": "veto", "accuracy": "record"}, "is given a class twice"),
    ],
)
def test_a_bad_signal_class_names_the_key_and_the_fix(classes: dict[str, str], problem: str) -> None:
    from pydantic import ValidationError

    raw = EXAMPLE_POLICY.model_dump()
    raw["models"][MODEL]["drift"]["classes"] = classes
    raw["models"][MODEL]["drift"]["signals"] = []
    with pytest.raises(ValidationError) as err:
        Policy.model_validate(raw)
    assert "drift.classes" in str(err.value) and problem in str(err.value)


def test_a_class_for_a_signal_the_rule_does_not_listen_to_says_to_list_it() -> None:
    from pydantic import ValidationError

    raw = EXAMPLE_POLICY.model_dump()
    raw["models"][MODEL]["drift"]["classes"] = {"accuracy": "retrain_now"}  # signals: [feature-drift]
    with pytest.raises(ValidationError) as err:
        Policy.model_validate(raw)
    assert "add it to drift.signals or remove its class" in str(err.value)
