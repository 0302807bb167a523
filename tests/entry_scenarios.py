"""The scenarios of tests/test_permission_entries.py: each sets up a world and returns what to run once the app's
identity holds, per request, only the running operation's entry (tests/entry_watch.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from function_app.adapters.monitor_guards import MonitorGuards
from handlers.guard_rules import QueryGuard
from handlers.pickup import SOURCE_WORKSPACE
from handlers.rollout_rules import SmokeData
from tests import rbac
from tests.azure_world import DATASET, DRIFT_SAMPLE, ENDPOINT, MODEL, WORKSPACE_ID, AzureWorld, in_workspace
from tests.batch_world import BATCH, RECENT, Batch, batch_policy
from tests.builders import with_classes, with_environment
from tests.crashes import DiesAfterActing, WorkerDied
from tests.fake_http import APP_CLIENT_ID, FakeCredential
from tests.monitoring import BREACH, breach, breached_text

COMPARE = {"data": f"azureml:{RECENT}:4", "metric": "r2_score", "margin": 0.01}  # a batch candidate's comparison
Scenario = Callable[[AzureWorld], Callable[[], Any]]


def _retrain(azure: AzureWorld) -> Callable[[], Any]:
    """A drift event: its data read through @latest pinned to a version, the retrain's checks (the served champion's
    lineage), its submission, then its status."""
    azure.trained_on("4", "1")
    azure.arm.add_deployment(ENDPOINT, "blue", model=(MODEL, "4"))

    def act() -> None:
        [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
        assert rec.outcome == "submitted", rec.reason
        assert azure.actions.job_status(str(rec.job["name"])) is not None

    return act


def _resumed(azure: AzureWorld) -> Callable[[], Any]:
    """A drift event's worker submits its job and dies before recording it; the redelivery, past its lease, finds
    the job and adopts it before anything is judged again."""
    raw = in_workspace(DRIFT_SAMPLE)
    with pytest.raises(WorkerDied):
        azure.deliver(raw, azure.new_worker(DiesAfterActing(azure.actions)))
    azure.now.advance(minutes=2)

    def act() -> None:
        [rec] = azure.deliver(raw, azure.new_worker()).decisions
        assert (rec.outcome, rec.details.get("adopted")) == ("submitted", True), rec.reason

    return act


def _resumed_deploy(azure: AzureWorld) -> Callable[[], Any]:
    """A candidate's worker starts its deployment (online, or on the batch endpoint when the policy names one) and
    dies before recording it; the redelivery, past its lease, finds the deployment and adopts it before its gate is
    judged again."""
    rule = azure.policy.models[MODEL].deploy
    if rule is not None and rule.batch_endpoint is not None:
        Batch(azure)
    raw = azure.finished_run(r2="0.61")
    with pytest.raises(WorkerDied):
        azure.deliver(raw, azure.new_worker(DiesAfterActing(azure.actions)))
    azure.provisioned()  # the dead worker's poller done: its reads are no operation of the redelivery's
    azure.now.advance(minutes=2)

    def act() -> None:
        [rec] = azure.deliver(raw, azure.new_worker()).decisions
        assert (rec.outcome, rec.details.get("adopted"), rec.details.get("gate")) == ("submitted", True, None), (
            rec.reason
        )

    return act


def _health(azure: AzureWorld) -> Callable[[], Any]:
    """A candidate at its first step, then judged on its bake's traffic (from the world's health source)."""
    [deploy] = azure.deliver(azure.finished_run(r2="0.61")).decisions
    assert deploy.outcome == "submitted", deploy.reason
    name = str(deploy.details["rendered"]["deployment"])
    azure.provisioned()

    def act() -> None:
        azure.new_worker().reconcile()  # the first step
        started = azure.now.now
        for m in range(10):
            when = started + timedelta(minutes=m, seconds=30)
            azure.serve(when, name, ok=10)
            azure.serve(when, "blue", ok=90)
        azure.now.now = started + timedelta(minutes=30)
        [entry] = azure.new_worker().reconcile().rollouts
        assert entry["state"] == "stepped", entry

    return act


def _rollout(azure: AzureWorld) -> Callable[[], Any]:
    """A better candidate deployed, stepped and promoted; the model monitor follows it."""
    azure.arm.add_monitor("diabetes-monitor", ENDPOINT, "blue")

    def act() -> None:
        _, promote = azure.promoted()
        assert promote.outcome == "submitted", promote.reason
        azure.provisioned()
        azure.now.advance(hours=25)  # past the example policy's retire_after: the demoted deployment goes
        [retired] = azure.new_worker().reconcile().retired
        assert retired.outcome == "submitted", retired.reason

    return act


def _veto(azure: AzureWorld) -> Callable[[], Any]:
    """A monitor's breach: the retrain's checks read the monitor run's steps (a signal component's too)."""
    azure.policy = with_classes({"feature-drift": "retrain", "data-quality": "veto"})
    azure.worker = azure.new_worker()
    azure.arm.add_job("monitor-run-1", experiment="diabetes-monitor", outputs=())
    component = azure.arm.add_step("monitor-run-1", "feature-drift_signal_monitor")
    tags = {BREACH: breached_text("feature-drift")}
    raw = breach(azure, "feature-drift", azure.arm.add_step(component, "evaluate_metric_thresholds", tags=tags))

    def act() -> None:
        [rec] = azure.deliver(raw).decisions
        assert rec.outcome == "submitted", rec.reason

    return act


def _reads(azure: AzureWorld) -> Callable[[], Any]:
    """The reconciler's and the approvals' reads: the champion, the data's versions, who created a run, a data
    version or a model version, and which model version is latest (a retrain's model input read through @latest)."""
    azure.trained_on("4", "1")
    azure.arm.add_deployment(ENDPOINT, "blue", model=(MODEL, "4"))
    step = azure.arm.add_step("train-4", "evaluate_model")

    def act() -> None:
        champion = azure.actions.champion(ENDPOINT)
        assert champion is not None and champion.version.version == "4"
        assert [v.version for v in azure.actions.data_versions(DATASET)] == ["1", "2"]
        assert azure.actions.tracking_uri().startswith("azureml://")
        assert azure.actions.run_creator(step).problem == ""
        assert azure.actions.data_creator(DATASET, "2").problem == ""
        assert azure.actions.model_creator(MODEL, "4").problem == ""
        assert azure.actions.latest_model(MODEL) == "4"

    return act


def _smoke(azure: AzureWorld) -> Callable[[], Any]:
    """A smoke test's sample requests read from their data asset's file, sent to the live deployment by name."""
    azure.arm.scoring.aad(ENDPOINT)
    uri = azure.arm.datastores.put("smoke/requests.jsonl", b'{"data": [[1, 2, 3]]}\n')
    azure.arm.add_data("smoke-requests", "2", kind="uri_file", uri=uri)

    def act() -> None:
        [body] = azure.actions.samples(SmokeData(data="azureml:smoke-requests:2", count=1))
        assert azure.actions.score(ENDPOINT, "blue", body, 5.0).status == 200

    return act


def _guards(azure: AzureWorld) -> Callable[[], Any]:
    """A rollout's query guard, run on the environment's Log Analytics workspace."""
    query = "T | where d == deployment_name | summarize value = count()"
    azure.logs.guard(query, lambda endpoint, deployment, start, end: [{"value": 3.0}])
    guards = MonitorGuards.from_settings(azure.settings, credential=FakeCredential(), transport=azure.logs)

    def act() -> None:
        until = azure.now.now
        reading = guards.value(
            "g", QueryGuard(query=query, min=1.0), ENDPOINT, "blue", until - timedelta(minutes=10), until
        )
        assert reading.value == 3.0, reading

    return act


def _batch(azure: AzureWorld) -> Callable[[], Any]:
    """A batch candidate deployed, compared on its data by a job per deployment, made the default; then the
    demoted default retired."""
    batch = Batch(azure)

    def act() -> None:
        deploy = batch.candidate(r2="0.61")
        assert deploy.outcome == "submitted", deploy.reason
        name = str(deploy.details["rendered"]["deployment"])
        azure.arm.batch.scores_with(BATCH, "nightly", {"r2_score": 0.52})
        azure.arm.batch.scores_with(BATCH, name, {"r2_score": 0.58})
        azure.provisioned()
        assert batch.state() == "comparing"
        azure.now.now += timedelta(minutes=16)
        assert batch.state() == "promoted"
        assert azure.actions.batch.endpoint_traffic(BATCH) == {name: 100}
        azure.now.now += timedelta(hours=25)  # the example policy's retire_after: 24h
        [retired] = azure.new_worker().reconcile().retired
        assert retired.outcome == "submitted", retired.reason

    return act


def _upstream(azure: AzureWorld) -> Callable[[], Any]:
    """An upstream environment's promotion shared into its registry."""
    azure.policy = with_environment({"registry": rbac.REGISTRY, "role": "upstream"})
    azure.worker = azure.new_worker()
    azure.with_registry("upstream")

    def act() -> None:
        _, promote = azure.promoted()
        assert promote.details["shared"]["outcome"] == "shared", promote.reason

    return act


def _downstream(azure: AzureWorld) -> Callable[[], Any]:
    """A downstream environment: its champion served from the registry, the registry's versions polled, and a
    retrain's checks reading the champion there."""
    downstream = {"registry": rbac.REGISTRY, "role": "downstream", "upstream": WORKSPACE_ID}
    azure.policy = with_environment({**downstream, "upstream_identity": [APP_CLIENT_ID]})
    azure.worker = azure.new_worker()
    azure.serve_from_registry("2")

    def act() -> None:
        champion = azure.actions.champion(ENDPOINT, rbac.REGISTRY)
        assert champion is not None and champion.registry == rbac.REGISTRY
        assert [v.version for v in azure.actions.registry_versions(rbac.REGISTRY, MODEL)] == ["2"]
        [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
        assert rec.details.get("worthiness", {}).get("champion"), rec.details
        lineage = {SOURCE_WORKSPACE: WORKSPACE_ID, "r2_score": "0.9"}
        azure.arm.registries.add_model(rbac.REGISTRY, MODEL, "3", tags=lineage)  # promoted upstream since
        report = azure.new_worker().reconcile()
        assert [r.outcome for r in report.picked_up] == ["submitted"], [r.reason for r in report.picked_up]

    return act


def _cancel(azure: AzureWorld) -> Callable[[], Any]:
    """A batch comparison's job still running, cancelled."""
    batch = Batch(azure)
    deploy = batch.candidate(r2="0.61")
    assert deploy.outcome == "submitted", deploy.reason
    azure.provisioned()
    assert batch.state() == "comparing"
    [(_, _, job), *_] = azure.arm.batch.invoked

    def act() -> None:
        assert azure.actions.cancel_batch(job)

    return act


# scenario -> (its setup, the operations it must run, the world's options)
SCENARIOS: dict[str, tuple[Scenario, tuple[str, ...], dict[str, Any]]] = {
    "retrain": (
        _retrain,
        (
            "AzureMLActions.latest_data",
            "AzureMLActions.retrain_facts",
            "AzureMLActions.submit_retrain",
            "AzureMLActions.job_status",
        ),
        {},
    ),
    "rollout": (
        _rollout,
        (
            "AzureMLActions.candidate_facts",
            "AzureMLActions.start_deploy",
            "AzureMLActions.deployment_state",
            "AzureMLActions.set_traffic",
            "AzureMLActions.monitors_targeting",
            "AzureMLActions.retarget_monitor",
            "AzureMLActions.list_deployments",
            "AzureMLActions.delete_deployment",
        ),
        {},
    ),
    "resumed retrain": (_resumed, ("AzureMLActions.find_retrain",), {}),
    "resumed deploy": (_resumed_deploy, ("AzureMLActions.find_deploy",), {}),
    "resumed batch deploy": (_resumed_deploy, ("AzureMLBatch.find_deploy",), {"policy": batch_policy(COMPARE)}),
    "veto": (_veto, ("AzureMLActions.retrain_facts",), {}),
    "reads": (
        _reads,
        (
            "AzureMLActions.champion",
            "AzureMLActions.data_versions",
            "AzureMLActions.tracking_uri",
            "AzureMLActions.run_creator",
            "AzureMLActions.data_creator",
            "AzureMLActions.model_creator",
            "AzureMLActions.latest_model",
        ),
        {},
    ),
    "smoke": (_smoke, ("AzureMLActions.samples", "AzureMLActions.score"), {}),
    "query guards": (_guards, ("MonitorGuards.value",), {}),
    "batch": (
        _batch,
        (
            "AzureMLBatch.candidate_facts",
            "AzureMLBatch.start_deploy",
            "AzureMLBatch.deployment_state",
            "AzureMLBatch.set_traffic",
            "AzureMLBatch.endpoint_traffic",
            "AzureMLBatch.list_deployments",
            "AzureMLBatch.delete_deployment",
            "AzureMLActions.invoke_batch",
            "AzureMLActions.batch_run",
        ),
        {"policy": batch_policy(COMPARE)},
    ),
    "upstream registry": (_upstream, ("AzureMLActions.share_promoted",), {}),
    "downstream registry": (
        _downstream,
        (
            "AzureMLActions.champion",
            "AzureMLActions.registry_versions",
            "AzureMLActions.retrain_facts",
            "AzureMLActions.candidate_facts",
            "AzureMLActions.start_deploy",
        ),
        {},
    ),
    "batch job cancelled": (_cancel, ("AzureMLActions.cancel_batch",), {"policy": batch_policy(COMPARE)}),
    "health from logs": (_health, ("AzureMLActions.endpoint_traffic", "MonitorHealth.read"), {"source": "logs"}),
    "health from metrics": (_health, ("MonitorMetrics.read",), {"source": "metrics"}),
}
