"""A batch candidate's comparison job (``deploy.batch_endpoint.compare``), end to end with the real Azure ML
SDK against the fake ARM's batch endpoints (tests/fake_batch.py): once the candidate batch deployment is
provisioned, champion and candidate each score the same data asset in a batch job (invoked through the
endpoint's scoring URI as the service's identity); the reconciler waits for both, the gate judges the
metrics both jobs logged with MLflow, and only a winner gets the endpoint's default switched. A worker
that dies after invoking, between reading the two jobs, or after the switch leaves what the next pass
finishes, on both ledgers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from function_app import runtime
from handlers.errors import PolicyError
from handlers.policy_file import parse_policy
from handlers.retrainer import OperatorRequest
from handlers.signals import Trigger
from tests.azure_world import DRIFT_SAMPLE, MODEL, WORKSPACE_ID, AzureWorld, in_workspace
from tests.batch_world import BATCH, RECENT, Batch, batch_policy
from tests.builders import run_event
from tests.conftest import REPO
from tests.crashes import BatchRunsThatDie, WorkerDied
from tests.fake_arm_common import PROVIDER
from tests.fake_batch_jobs import INVOKER_ROLE, SCORING_STEP
from tests.hosts import hosting
from tests.ledgers import LedgerSpec

COMPARE = {"data": f"azureml:{RECENT}:4", "metric": "r2_score", "margin": 0.01}
# secrets in Microsoft's invoker role the service is never granted (its metadata/secrets/read is matched by the
# */read of Monitoring Reader, which the identity holds on the subscription: docs/security.md)
INVOKER_SECRETS = ("listStorageAccountKeys/action", "computes/listKeys/action")
JOB_TIME = timedelta(minutes=16)  # a batch job's run on the fake clock is 15 minutes


@pytest.fixture
def batch(ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Batch]:
    monkeypatch.chdir(tmp_path)
    world = AzureWorld(tmp_path, ledger_spec, policy=batch_policy(COMPARE))
    yield Batch(world)
    runtime.set_retrainer(None)
    world.close()
    assert world.arm.unexpected == []


def provisioned_candidate(batch: Batch, *, champion: float, candidate: float, status: str = "Completed") -> str:
    """A candidate batch deployment, provisioned; the scoring jobs of the default and of the candidate
    will log ``champion`` and ``candidate`` as their r2_score (the candidate's job ends ``status``)."""
    deploy = batch.candidate(r2="0.61")
    assert deploy.outcome == "submitted", deploy.reason
    name = str(deploy.details["rendered"]["deployment"])
    fake = batch.azure.arm.batch
    fake.scores_with(BATCH, "nightly", {"r2_score": champion, "rows": 5000})
    fake.scores_with(BATCH, name, {"r2_score": candidate, "rows": 5000}, status)
    batch.azure.provisioned()
    return name


def later(batch: Batch, by: timedelta = JOB_TIME) -> None:
    batch.azure.now.now = batch.azure.now.now + by


def test_a_drift_retrains_and_its_candidate_wins_the_comparison_and_becomes_the_batch_default(batch: Batch) -> None:
    azure = batch.azure
    [retrain] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert (retrain.action, retrain.outcome) == ("retrain", "submitted"), retrain.reason
    job = str(retrain.job["name"])  # type: ignore[index]
    azure.arm.set_job_status(job, "Completed")  # the retraining pipeline ran; its evaluation step logged r2
    azure.arm.add_step(job, "evaluate_model", metrics={"r2_score": 0.61})
    tags = azure.arm.jobs[job]["properties"]["tags"]
    [deploy] = azure.deliver(run_event(run_id=job, tags=tags, topic=WORKSPACE_ID)).decisions
    assert (deploy.action, deploy.outcome) == ("deploy", "submitted"), deploy.reason
    name = str(deploy.details["rendered"]["deployment"])
    assert azure.arm.batch.deployments[(BATCH, name)]["properties"]["model"]["assetId"].endswith("/versions/4")
    azure.arm.batch.scores_with(BATCH, "nightly", {"r2_score": 0.52})
    azure.arm.batch.scores_with(BATCH, name, {"r2_score": 0.57})
    azure.provisioned()
    assert batch.state() == "comparing" and batch.default() == "nightly"
    later(batch)
    assert batch.state() == "promoted" and batch.default() == name
    actions = [r.action for r in reversed(azure.ledger.decisions(MODEL, 20))]
    assert actions == ["retrain", "deploy", "rollout", "promote"]  # every step a recorded decision


def test_a_candidate_that_wins_the_comparison_gets_the_default_switched(batch: Batch) -> None:
    name = provisioned_candidate(batch, champion=0.52, candidate=0.58)
    assert batch.state() == "comparing"  # both jobs started, nothing switched
    fake = batch.azure.arm.batch
    asked = sorted((d, fake.asked[j].split("-")[-2]) for _, d, j in fake.invoked)
    assert asked == [("nightly", "champion"), (name, "candidate")]
    [compare] = batch.records("rollout")
    held = compare.details["jobs"]  # the names Azure gave the jobs (not the ones asked for), recorded
    assert sorted(held.values()) == sorted(j for _, _, j in fake.invoked)
    assert all(j.startswith("batchjob-") for j in held.values())
    assert compare.outcome == "submitted" and RECENT in compare.reason and batch.default() == "nightly"
    for _, _, job in fake.invoked:  # created as the service, of the data asset the policy names
        created = batch.azure.arm.jobs[job]
        assert created["systemData"]["createdByType"] != "User"
    assert batch.state() == "comparing"  # the jobs run for minutes: waited for, never blocked on

    later(batch)
    assert batch.state() == "promoted"
    assert batch.default() == name and not batch.in_flight()
    [promote] = batch.records("promote")
    figures = promote.details["compare"]
    assert figures["gate"]["candidate"] == 0.58 and figures["gate"]["champion"] == 0.52 and figures["gate"]["passed"]
    assert {r: j["status"] for r, j in figures["jobs"].items()} == {"candidate": "Completed", "champion": "Completed"}
    assert "0.58 beats champion nightly r2_score 0.52" in promote.reason and "nightly -> " + name in promote.reason
    assert batch.azure.arm.refused == []  # the custom role grants the invocations


def test_a_candidate_that_loses_the_comparison_is_a_recorded_skip_never_switched_and_retired(batch: Batch) -> None:
    name = provisioned_candidate(batch, champion=0.52, candidate=0.525)  # better, but not by the margin 0.01
    assert batch.state() == "comparing"
    later(batch)
    assert batch.state() == "rejected"
    [reject] = batch.records("rollback")
    assert reject.outcome == "skipped" and "not switched" in reject.reason and "0.525" in reject.reason
    assert reject.details["compare"]["gate"]["passed"] is False
    assert batch.default() == "nightly" and not batch.in_flight() and batch.records("promote") == []

    later(batch, timedelta(hours=25))  # the example policy's retire_after: 24h
    [retired] = batch.azure.new_worker().reconcile().retired
    assert retired.outcome == "submitted" and retired.details["deployment"] == name
    batch.azure.provisioned()
    assert batch.azure.arm.batch.deployments.keys() == {(BATCH, "nightly")}


def test_a_comparison_whose_candidate_job_fails_is_recorded_failed_and_nothing_switches(batch: Batch) -> None:
    provisioned_candidate(batch, champion=0.52, candidate=0.9, status="Failed")
    assert batch.state() == "comparing"
    later(batch)
    assert batch.state() == "compare_failed"
    [failed] = batch.records("rollback")
    assert failed.outcome == "failed" and "the candidate's job" in failed.reason and "ended Failed" in failed.reason
    assert batch.default() == "nightly" and not batch.in_flight()


def test_a_comparison_not_done_by_its_timeout_fails_and_its_jobs_still_running_are_canceled(batch: Batch) -> None:
    batch.azure.arm.durations["batch-job"] = 8 * 3600.0  # the jobs will run for 8 hours
    provisioned_candidate(batch, champion=0.52, candidate=0.58)
    assert batch.state() == "comparing"
    later(batch, timedelta(hours=6, minutes=1))  # the default timeout: 6h
    assert batch.state() == "compare_failed"
    [failed] = batch.records("rollback")
    assert failed.outcome == "failed" and "not done after 6h (candidate Running, champion Running)" in failed.reason
    fake = batch.azure.arm.batch
    assert sorted(fake.canceled) == sorted(job for _, _, job in fake.invoked)
    assert {role: said.split()[-1] for role, said in failed.details["canceled"].items()} == {
        "candidate": "canceled",
        "champion": "canceled",
    }
    assert {batch.azure.arm.jobs[job]["properties"]["status"] for job in fake.canceled} == {"Canceled"}
    assert batch.default() == "nightly" and not batch.in_flight()


@pytest.mark.parametrize(
    "action",
    [
        "Microsoft.MachineLearningServices/workspaces/batchEndpoints/deployments/jobs/write",
        # "Lists datastore secrets" (Authorization on batch endpoints): infra grants it on the data's datastore
        "Microsoft.MachineLearningServices/workspaces/datastores/listsecrets/action",
    ],
)
def test_a_comparison_the_service_may_not_invoke_fails_recorded_and_nothing_switches(batch: Batch, action: str) -> None:
    provisioned_candidate(batch, champion=0.52, candidate=0.58)
    batch.azure.arm.principal = batch.azure.arm.principal.without(action)
    later(batch, timedelta(hours=2))  # past the hour a new role assignment may take: a 403 is a refusal now
    assert batch.state() == "compare_failed"
    [failed] = batch.records("rollback")
    assert failed.outcome == "failed" and "could not start" in failed.reason and action in failed.reason
    if "listsecrets" in action:  # where infra grants what is missing
        assert "RETRAIN_BATCH_DATASTORE" in failed.reason
    assert batch.default() == "nightly" and not batch.in_flight()


def test_where_azure_checks_all_of_microsoft_s_invoker_role_a_comparison_fails_closed_and_no_secret_is_granted(
    batch: Batch,
) -> None:
    """Microsoft's custom role for invoking a batch endpoint lists 35 actions, secrets among them (the workspace
    storage account's keys, compute keys, workspace secrets); which of them Azure checks when a job is created is not
    documented. Where it checks them all, the service, which holds none of those secrets, cannot start the
    comparison: a recorded failure naming what is missing, nothing switched (docs/azure-behaviour.md: the trade)."""
    provisioned_candidate(batch, champion=0.52, candidate=0.58)
    batch.azure.arm.batch.checks_invoker_role = True
    later(batch, timedelta(hours=2))
    assert batch.state() == "compare_failed"
    [failed] = batch.records("rollback")
    assert failed.outcome == "failed" and "could not start" in failed.reason
    assert [a for a in INVOKER_ROLE if a in failed.reason], failed.reason  # it names the action refused
    assert batch.default() == "nightly" and not batch.in_flight()
    arm = batch.azure.arm
    assert not [a for a in INVOKER_SECRETS if arm.principal.allows(f"{PROVIDER}/workspaces/{a}", arm.ws_path)]


@pytest.mark.parametrize("ledger_spec", ["sqlite", "table"], indirect=True)
def test_a_worker_that_dies_after_invoking_leaves_the_comparison_to_the_next_pass_which_adopts_its_jobs(
    batch: Batch,
) -> None:
    name = provisioned_candidate(batch, champion=0.52, candidate=0.58)
    with pytest.raises(WorkerDied):
        batch.state(batch_runs=BatchRunsThatDie(batch.azure.actions, "invoking"))
    fake = batch.azure.arm.batch
    assert len(fake.invoked) == 2 and batch.records("rollout") == [] and batch.in_flight()
    assert batch.state() == "comparing"  # the same transition carried out: its jobs found, none started again
    assert len(fake.invoked) == 2 and len(batch.records("rollout")) == 1
    later(batch)
    assert batch.state() == "promoted" and batch.default() == name


def test_a_worker_that_dies_after_invoking_adopts_its_jobs_by_name_when_azure_keeps_the_names_asked_for(
    batch: Batch,
) -> None:
    fake = batch.azure.arm.batch
    fake.honours_names = True  # the other case: whether Azure keeps a batch job's requested name is unverified
    name = provisioned_candidate(batch, champion=0.52, candidate=0.58)
    with pytest.raises(WorkerDied):
        batch.state(batch_runs=BatchRunsThatDie(batch.azure.actions, "invoking"))
    assert batch.state() == "comparing" and len(fake.invoked) == 2
    assert all(fake.asked[j] == j for _, _, j in fake.invoked)  # found by the names asked for
    later(batch)
    assert batch.state() == "promoted" and batch.default() == name


def test_an_invocation_whose_answer_is_lost_is_retried_into_the_job_it_started_not_a_second(batch: Batch) -> None:
    name = provisioned_candidate(batch, champion=0.52, candidate=0.58)
    fake = batch.azure.arm.batch
    fake.lost_answers = 2  # each job starts, and its caller hears a 503
    assert batch.state() == "comparing"
    assert len(fake.invoked) == 2  # one job per role, found in its experiment when the retry looked first
    [compare] = batch.records("rollout")
    assert sorted(compare.details["jobs"].values()) == sorted(j for _, _, j in fake.invoked)
    later(batch)
    assert batch.state() == "promoted" and batch.default() == name


@pytest.mark.parametrize("ledger_spec", ["sqlite", "table"], indirect=True)
def test_a_worker_that_dies_between_reading_the_two_jobs_changes_nothing_and_the_next_pass_judges(
    batch: Batch,
) -> None:
    name = provisioned_candidate(batch, champion=0.52, candidate=0.58)
    assert batch.state() == "comparing"
    later(batch)
    with pytest.raises(WorkerDied):  # the first job read (finished), the worker gone before the second
        batch.state(batch_runs=BatchRunsThatDie(batch.azure.actions, "reading"))
    assert batch.default() == "nightly" and batch.in_flight() and batch.records("promote") == []
    assert batch.state() == "promoted" and batch.default() == name


@pytest.mark.parametrize("ledger_spec", ["sqlite", "table"], indirect=True)
def test_a_worker_that_dies_after_the_comparison_s_switch_is_finished_with_its_numbers(batch: Batch) -> None:
    name = provisioned_candidate(batch, champion=0.52, candidate=0.58)
    assert batch.state() == "comparing"
    later(batch)
    promote = batch.switch_dies_then_the_next_pass_finishes(name)
    assert promote.details["compare"]["gate"]["candidate"] == 0.58


def test_an_operator_s_rollback_during_the_comparison_keeps_the_default_and_rejects_the_candidate(
    batch: Batch,
) -> None:
    provisioned_candidate(batch, champion=0.52, candidate=0.58)
    assert batch.state() == "comparing"
    trigger = Trigger("http", "op-rollback-1", "OperatorRequest.rollback", {"kind": "user", "name": "ana"})
    rolled = batch.azure.new_worker().operate(OperatorRequest(trigger, MODEL, "rollback", "wrong data asset"))
    assert rolled.outcome == "submitted", rolled.reason
    fake = batch.azure.arm.batch
    assert sorted(fake.canceled) == sorted(job for _, _, job in fake.invoked)  # both jobs stopped, not left to run
    assert sorted(rolled.details["canceled"]) == ["candidate", "champion"]
    later(batch)
    assert batch.azure.new_worker().reconcile().rollouts == []  # nothing in flight: the jobs' end is not judged
    assert batch.default() == "nightly" and batch.records("promote") == []


def policy_with(compare: Any) -> Any:
    raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
    deploy = raw["models"][MODEL]["deploy"]
    del deploy["endpoint"]
    deploy["rollout"] = {"steps": [100]}
    deploy["batch_endpoint"] = {"name": BATCH, "compare": compare}
    return parse_policy(yaml.safe_dump(raw))


@pytest.mark.parametrize(
    ("compare", "said"),
    [
        ({**COMPARE, "data": "recent"}, r"compare\.data.*'recent' does not name a data asset version.*azureml:<name>"),
        ({**COMPARE, "source": "run"}, r"compare.*(source: run|needs source: mlflow)"),
        ({**COMPARE, "timeout": "1m"}, r"compare\.timeout.*between 5m and 7d"),
        ({"data": COMPARE["data"]}, r"compare.*write either 'metric'.*or 'metrics'"),
        ({**COMPARE, "step": " "}, r"compare\.step: an empty step; write the display name .* or leave it out"),
        ({**COMPARE, "window": "7d"}, r"compare\.window: unknown key; remove it"),
    ],
)
def test_policy_validation_names_the_comparison_s_key_and_the_fix(compare: dict[str, Any], said: str) -> None:
    with pytest.raises(PolicyError, match=said):
        policy_with(compare)


def test_a_valid_comparison_reads_the_scoring_step_and_waits_six_hours_by_default() -> None:
    rule = policy_with({"data": COMPARE["data"], "metrics": [{"name": "auc"}]})
    compare = rule.models[MODEL].deploy.batch_endpoint.compare  # type: ignore[union-attr]
    assert compare is not None and compare.step == "batchscoring" and compare.timeout == timedelta(hours=6)
    assert compare.asset == (RECENT, "4") and [m.name for m in compare.rules] == ["auc"]


@pytest.mark.slow
@pytest.mark.browser
def test_the_console_shows_a_comparison_in_flight_then_its_verdict_with_the_numbers(batch: Batch) -> None:
    from tests.browser import browser_page

    name = provisioned_candidate(batch, champion=0.52, candidate=0.58)
    assert batch.state() == "comparing"
    with hosting(batch.azure) as url, browser_page() as page:
        page.goto(f"{url}/api/console")
        card = page.locator(f'article.model[data-model="{MODEL}"]')
        card.locator(".rollout").wait_for()
        step = card.locator(".rollout-step").inner_text()
        assert f"comparison on azureml:{RECENT}:4 since " in step and "candidate job batchjob-" in step
        assert card.locator(".batch").inner_text() == f"{BATCH}: nightly"
        later(batch)
        assert batch.state() == "promoted"
        page.reload()
        card = page.locator(f'article.model[data-model="{MODEL}"]')
        card.locator(".compare").wait_for()
        said = card.locator(".compare").inner_text()
        assert said == (
            f"promote submitted on azureml:{RECENT}:4: r2_score: candidate 0.58 vs champion 0.52 (won: default switched)"
        )
        assert card.locator(".batch").inner_text() == f"{BATCH}: {name}"


def test_an_mlflow_run_posing_as_the_candidate_job_s_scoring_step_fails_the_comparison_never_switches(
    batch: Batch,
) -> None:
    """A workspace account logs an MLflow run under the candidate's batch job (``mlflow.parentRunId``, which a
    run's creator sets) named as its scoring step, with a winning metric: which run is the job's step cannot
    be told, so neither judges (the gate's rule), and the default stays."""
    name = provisioned_candidate(batch, champion=0.52, candidate=0.50)  # the real scoring step loses
    assert batch.state() == "comparing"
    fake = batch.azure.arm.batch
    [job] = [j for _, d, j in fake.invoked if d == name]
    experiment = batch.azure.arm.jobs[job]["properties"]["experimentName"]
    batch.azure.arm.log_mlflow_run(
        "posing-step", experiment=experiment, name=SCORING_STEP, parent=job, metrics={"r2_score": 0.99}
    )
    later(batch)
    assert batch.state() == "compare_failed"
    [failed] = batch.records("rollback")
    assert failed.outcome == "failed", failed.reason
    assert f"2 MLflow runs under job {job} are named '{SCORING_STEP}'" in failed.reason
    assert "posing-step" in failed.reason, failed.reason
    assert batch.default() == "nightly" and batch.records("promote") == []
