"""Upstream runs as a trigger (retrain.on.runs): the completion of a named upstream pipeline starts the
model's retrain, once per upstream run, with the run re-read from the workspace through the real Azure ML
SDK (the fake ARM) rather than taken from the event."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from handlers.envelopes import envelope_from_dict
from handlers.errors import TransientError
from handlers.plans import Retrain, Skip
from handlers.policy_file import PolicyError, parse_policy
from handlers.signals import OPERATOR, RunFinished, RunSeen, Trigger
from handlers.upstream import on_upstream, upstream_decision_id
from tests.azure_world import DATASET, RUN_SAMPLE, WORKSPACE_ID, AzureWorld, in_workspace
from tests.builders import ADA, ADA_TOKEN, BOB_CALLER, MODEL, cloud, ours, run_event, with_retrain, with_retrain_on
from tests.ledgers import LedgerSpec

RUN = "ingest-daily-20261125-0400"
UPSTREAM = {"runs": [{"experiment": "ingest-daily", "display_name": "nightly ingestion"}]}
POLICY = with_retrain_on(UPSTREAM)
OTHER_WORKSPACE = WORKSPACE_ID.replace("/ws-retrain", "/ws-other")


def world_with(tmp_path: Path, ledger: LedgerSpec | None = None, policy: Any = POLICY, **job: Any) -> AzureWorld:
    """The workspace holding the upstream run ``RUN`` (``job``: how it stands there)."""
    world = AzureWorld(tmp_path, ledger, policy=policy)
    world.arm.add_job(
        RUN, **{"experiment": "ingest-daily", "display_name": "nightly ingestion", "outputs": ("data",), **job}
    )
    return world


def upstream_event(**kw: Any) -> dict[str, Any]:
    kw.setdefault("topic", WORKSPACE_ID)
    return run_event(run_id=kw.pop("run_id", RUN), experiment=kw.pop("experiment", "ingest-daily"), **kw)


def job_puts(world: AzureWorld) -> list[str]:
    return [c.path.rsplit("/", 1)[-1] for c in world.arm.job_puts]


def finished(seen: RunSeen | None, **kw: Any) -> RunFinished:
    trigger = Trigger(WORKSPACE_ID, "e-1", "Microsoft.MachineLearningServices.RunCompleted")
    fields: dict[str, Any] = {
        "workspace": WORKSPACE_ID,
        "run_id": RUN,
        "experiment": "INGEST-daily",
        "status": "completed",
        "is_child": False,
        "run_tags": {},
        "run_properties": {},
        **kw,
    }
    return RunFinished(trigger, seen=seen, **fields)


@pytest.mark.parametrize(
    ("seen", "started"),
    [
        (RunSeen(True, "Completed", "ingest-daily", "Nightly Ingestion"), True),  # names compare case-insensitively
        (RunSeen(True, "Completed", "ingest-daily", "nightly ingestion", {"extra": "x"}), True),
        (RunSeen(True, "Completed", "ingest-daily", "weekly ingestion"), False),
        (RunSeen(True, "Completed", "other", "nightly ingestion"), False),
        (RunSeen(True, "Failed", "ingest-daily", "nightly ingestion"), False),
        (RunSeen(False), False),
        (None, False),
    ],
)
def test_the_upstream_rule_judges_what_the_workspace_reported(seen: RunSeen | None, started: bool) -> None:
    [decision] = on_upstream(finished(seen), POLICY)
    assert isinstance(decision, Retrain) == started and decision.model == MODEL
    if started:
        assert decision.id == upstream_decision_id(MODEL, RUN) and decision.once


def test_the_upstream_rule_keeps_out_of_steps_and_experiments_no_model_names() -> None:
    seen = RunSeen(True, "Completed", "ingest-daily", "nightly ingestion")
    assert on_upstream(finished(seen, is_child=True), POLICY) == []
    assert on_upstream(finished(seen, experiment="ingest-weekly"), POLICY) == []


@pytest.mark.both_ledgers
def test_a_completed_upstream_run_starts_one_retrain_however_often_it_is_told_of(
    tmp_path: Path, ledger_spec: LedgerSpec
) -> None:
    world = world_with(tmp_path, ledger_spec)
    first = upstream_event(event_id="up-1")
    [started] = world.deliver(first).decisions
    assert started.id == upstream_decision_id(MODEL, RUN) and started.outcome == "submitted"
    assert started.reason == (
        f"upstream run {RUN} (nightly ingestion) of experiment 'ingest-daily' completed "
        f"(models.{MODEL}.retrain.on.runs)"
    )
    assert job_puts(world) == [started.job["name"]]
    assert world.arm.requests_to("GET", f"jobs/{RUN}"), "the run is read back from the workspace"
    assert world.deliver(first).status == "duplicate"  # Event Grid delivers it again
    [again] = world.deliver(upstream_event(event_id="up-2")).decisions  # a second event about the same run
    assert again.id == started.id and again.outcome == "submitted"
    [status] = world.deliver(upstream_event(event_id="up-3", status="Completed")).decisions
    assert status.outcome == "skipped" and "handled from its RunCompleted event" in status.reason
    assert job_puts(world) == [started.job["name"]]
    assert [r.id for r in world.ledger.decisions(MODEL, 10) if r.action == "retrain"] == [started.id]


def test_microsofts_published_run_completed_of_a_named_experiment_is_an_automl_child_and_starts_nothing(
    tmp_path: Path,
) -> None:
    world = AzureWorld(tmp_path, policy=with_retrain_on({"runs": [{"experiment": "automl-local-regression"}]}))
    [skipped] = world.deliver(in_workspace(RUN_SAMPLE)).decisions
    assert skipped.outcome == "skipped" and "step or child of another run" in skipped.reason
    assert job_puts(world) == []


def test_an_upstream_run_in_the_cloudevents_schema_starts_the_same_retrain(tmp_path: Path) -> None:
    world = world_with(tmp_path)
    [started] = world.deliver(cloud(upstream_event())).decisions
    assert started.id == upstream_decision_id(MODEL, RUN) and started.outcome == "submitted"


@pytest.mark.parametrize("status", ["Failed", "Canceled"])
def test_an_upstream_run_that_failed_or_was_canceled_starts_nothing_recorded(tmp_path: Path, status: str) -> None:
    world = world_with(tmp_path, status=status)
    [skipped] = world.deliver(upstream_event(status=status)).decisions
    assert skipped.outcome == "skipped" and skipped.model == MODEL
    assert f"ended {status.lower()}: only a completed run starts a retrain" in skipped.reason
    assert job_puts(world) == [] and world.flights() == {}


@pytest.mark.parametrize(
    ("job", "says"),
    [
        ({"status": "Failed"}, f"the workspace reports upstream run {RUN} Failed, not Completed"),
        ({"status": "Running"}, f"the workspace reports upstream run {RUN} Running, not Completed"),
        ({"experiment": "scratch"}, "in experiment 'scratch', not 'ingest-daily' as the event says"),
        ({"display_name": "ad-hoc backfill"}, "display name 'ad-hoc backfill') is not an upstream run"),
    ],
)
def test_the_workspace_not_the_event_says_whether_the_upstream_run_completed(
    tmp_path: Path, job: dict[str, Any], says: str
) -> None:
    world = world_with(tmp_path, **job)
    [skipped] = world.deliver(upstream_event()).decisions  # the event says: completed, in ingest-daily
    assert skipped.outcome == "skipped" and says in skipped.reason
    assert job_puts(world) == []


def test_an_event_about_a_run_the_workspace_does_not_have_starts_nothing(tmp_path: Path) -> None:
    world = world_with(tmp_path)
    [skipped] = world.deliver(upstream_event(run_id="forged-run-1")).decisions
    assert skipped.outcome == "skipped" and "the workspace has no run forged-run-1" in skipped.reason
    assert job_puts(world) == []


def test_a_refused_read_of_the_run_is_a_recorded_skip_that_says_why(tmp_path: Path) -> None:
    world = world_with(tmp_path)
    world.arm.fail(403, method="GET", path=f"jobs/{RUN}", times=10)
    with pytest.raises(TransientError):  # within the hour roles take to settle: Event Grid delivers it again
        world.deliver(upstream_event())
    world.now.advance(hours=1)  # a 403 now is a role missing: recorded, not retried forever
    [skipped] = world.deliver(upstream_event()).decisions
    assert skipped.outcome == "skipped" and "could not be read from the workspace, so nothing starts" in skipped.reason
    assert job_puts(world) == []


def test_a_backtest_replays_the_upstream_run_as_the_workspace_reported_it(tmp_path: Path) -> None:
    world = world_with(tmp_path)
    [started] = world.deliver(upstream_event()).decisions
    world.now.advance(hours=1)
    report = world.worker.backtest(timedelta(days=1))
    mine = report.models[MODEL]
    assert [(o.action, o.result) for o in mine.draft] == [("retrain", "started")] and mine.differences == []
    assert mine.draft[0].reason == started.reason


def test_runs_of_other_experiments_and_of_other_workspaces_are_recorded_skips(tmp_path: Path) -> None:
    world = world_with(tmp_path)
    [other] = world.deliver(upstream_event(experiment="ingest-weekly")).decisions
    assert other.outcome == "skipped" and "no policy names it as a candidate" in other.reason
    [elsewhere] = world.deliver(upstream_event(topic=OTHER_WORKSPACE)).decisions
    assert elsewhere.outcome == "skipped" and "is not a workspace this service is configured for" in elsewhere.reason
    assert job_puts(world) == [] and not world.arm.requests_to("GET", f"jobs/{RUN}")


def test_tags_narrow_the_upstream_runs_as_the_workspace_reports_them(tmp_path: Path) -> None:
    tagged = with_retrain_on({"runs": [{"experiment": "ingest-daily", "tags": {"stage": "prod"}}]})
    world = world_with(tmp_path, policy=tagged, tags={"stage": "dev"})
    # the event claims the tag; the workspace's run does not carry it
    [skipped] = world.deliver(upstream_event(tags={"stage": "prod"})).decisions
    assert skipped.outcome == "skipped" and "tag stage='prod'" in skipped.reason
    world.arm.jobs[RUN]["properties"]["tags"] = {"stage": "prod"}
    [started] = world.deliver(upstream_event(event_id="again")).decisions
    assert started.outcome == "submitted"


def test_a_run_this_service_started_never_starts_a_retrain_of_itself(tmp_path: Path) -> None:
    world = world_with(tmp_path, tags=ours())
    decisions = world.deliver(upstream_event(tags=ours())).decisions
    assert [d.outcome for d in decisions] == ["skipped"] * len(decisions)
    assert any("was started by this service" in d.reason for d in decisions)
    assert job_puts(world) == []


def test_a_step_of_the_upstream_pipeline_is_a_recorded_skip(tmp_path: Path) -> None:
    world = world_with(tmp_path)
    step = upstream_event(run_id="step-1", properties={"azureml.pipelinerunid": RUN})
    [skipped] = world.deliver(step).decisions
    assert skipped.outcome == "skipped" and "step or child of another run" in skipped.reason
    assert job_puts(world) == []


def test_an_upstream_run_meets_the_same_guards_as_any_retrain(tmp_path: Path) -> None:
    world = world_with(tmp_path)
    manual = world.manual(reason="by hand")
    [refused] = world.deliver(upstream_event()).decisions
    assert refused.outcome == "skipped" and refused.details["guard"] == "in_flight"
    world.arm.set_job_status(manual.job["name"], "Completed")
    world.deliver(run_event(run_id=manual.job["name"], tags=ours(MODEL, manual.id), topic=WORKSPACE_ID))
    assert world.flights() == {}
    world.arm.add_job("ingest-daily-20261126-0400", experiment="ingest-daily", display_name="nightly ingestion")
    [cooling] = world.deliver(upstream_event(run_id="ingest-daily-20261126-0400")).decisions
    assert cooling.outcome == "skipped" and cooling.details["guard"] == "cooldown"
    assert job_puts(world) == [manual.job["name"]]


def test_an_upstream_run_of_a_frozen_model_or_over_its_budget_is_refused_recorded(tmp_path: Path) -> None:
    world = world_with(tmp_path, policy=with_retrain({"on": UPSTREAM, "daily_budget": 0}))
    [spent] = world.deliver(upstream_event()).decisions
    assert spent.outcome == "skipped" and spent.details["guard"] == "budget"
    world = world_with(tmp_path / "frozen")
    switch = Trigger("cli", "sw-1", "ManualRequest.freeze", (("kind", "command line"),), channel=OPERATOR)
    world.worker.freeze(True, switch, "release week", models=[MODEL])
    [frozen] = world.deliver(upstream_event()).decisions
    assert frozen.outcome == "skipped" and frozen.details["guard"] == "frozen" and job_puts(world) == []


def test_a_later_event_about_an_upstream_run_a_guard_refused_is_judged_again(
    tmp_path: Path, ledger_spec: LedgerSpec
) -> None:
    """Refused while the model was frozen, the run's next event (another subscription's, or the run's own
    RunCompleted after its RunStatusChanged) is judged on the model as it is now, as a run's keyed deploy
    decision is: not answered with the freeze that was lifted meanwhile."""
    world = world_with(tmp_path, ledger_spec)
    switch = Trigger("cli", "sw-1", "ManualRequest.freeze", (("kind", "command line"),), channel=OPERATOR)
    world.worker.freeze(True, switch, "release week", models=[MODEL])
    [frozen] = world.deliver(upstream_event(event_id="up-1")).decisions
    assert frozen.outcome == "skipped" and frozen.details["guard"] == "frozen" and job_puts(world) == []
    world.worker.freeze(False, replace(switch, event_id="sw-2"), "released", models=[MODEL])
    manual = world.manual(reason="by hand")

    [busy] = world.deliver(upstream_event(event_id="up-2")).decisions

    assert (busy.id, busy.outcome, busy.details["guard"]) == (frozen.id, "skipped", "in_flight"), busy.reason
    assert "frozen" not in busy.reason and world.ledger.get_decision(busy.id).details["guard"] == "in_flight"
    world.arm.set_job_status(manual.job["name"], "Completed")
    world.deliver(run_event(run_id=manual.job["name"], tags=ours(MODEL, manual.id), topic=WORKSPACE_ID))
    world.now.advance(hours=48)  # past the manual retrain's cooldown
    [started] = world.deliver(upstream_event(event_id="up-4")).decisions

    assert (started.id, started.outcome) == (frozen.id, "submitted") and "frozen" not in started.reason, started
    assert job_puts(world) == [manual.job["name"], started.job["name"]]
    [again] = world.deliver(upstream_event(event_id="up-3")).decisions  # judged once it was carried out
    assert (again.id, again.outcome) == (started.id, "submitted") and len(job_puts(world)) == 2
    assert world.deliver(upstream_event(event_id="up-1")).status == "duplicate"


def test_an_upstream_run_waits_for_approval_when_the_policy_asks_for_it(tmp_path: Path) -> None:
    world = world_with(tmp_path, policy=with_retrain({"on": UPSTREAM, "approval": {"required": True}}))
    [waiting] = world.deliver(upstream_event()).decisions
    assert waiting.outcome == "pending" and "waits for approval" in waiting.reason
    assert waiting.reason.startswith(f"upstream run {RUN}") and job_puts(world) == []


ADA_ELSEWHERE = (
    ("kind", "principal"),
    ("id", ADA.upper()),
    ("name", "ada.l@elsewhere.example"),
)  # her id, another name


def approve_as(world: AzureWorld, decision_id: str, caller: tuple[tuple[str, str], ...]) -> Any:
    trigger = Trigger("http", f"a-{len(caller)}", "ManualRequest.approve", caller, channel=OPERATOR)
    return world.worker.approve(decision_id, trigger, "go")


def test_who_created_the_upstream_run_cannot_approve_the_retrain_it_starts_under_four_eyes(tmp_path: Path) -> None:
    """Ada submits the ingestion run herself and holds the approver role: the retrain it starts waits for
    approval, and her approval is refused by who created the run (run history's object id); Bob's goes through,
    its record saying the creator was compared."""
    from handlers.errors import Forbidden

    policy = with_retrain({"on": UPSTREAM, "approval": {"required": True, "four_eyes": True}})
    world = world_with(tmp_path, policy=policy, created_by=ADA_TOKEN)
    [waiting] = world.deliver(upstream_event()).decisions
    assert waiting.outcome == "pending" and waiting.details["upstream_run"] == RUN

    with pytest.raises(Forbidden, match=f"created run {RUN}"):
        approve_as(world, waiting.id, ADA_ELSEWHERE)
    assert job_puts(world) == []
    done = approve_as(world, waiting.id, BOB_CALLER)
    assert done.outcome == "submitted" and len(job_puts(world)) == 1
    creator, data = done.details["approval"]["creators"]  # the upstream run, then the data it read through @latest
    assert creator["run"] == RUN and creator["compared"] == "object id, principal name"
    assert data["data"] == f"{DATASET}:2" and "pinned" in data["as"], data


def test_who_created_the_upstream_run_cannot_approve_the_deploy_of_the_retrain_it_started(tmp_path: Path) -> None:
    """The retrain Ada's upstream run starts needs no approval; the deploy of its run does, and it was asked for by
    that run's event (nobody) of a run the service created: the upstream run behind it is what tells it is hers."""
    from handlers.errors import Forbidden
    from handlers.policy import Policy

    raw = POLICY.model_dump()
    raw["models"][MODEL]["deploy"]["approval"] = {"required": True, "four_eyes": True}
    world = world_with(tmp_path, policy=Policy.model_validate(raw), created_by=ADA_TOKEN)
    [retrain] = world.deliver(upstream_event()).decisions
    job = str(retrain.job["name"])
    world.arm.set_job_status(job, "Completed")
    world.arm.add_step(job, "evaluate_model", metrics={"r2_score": 0.61})
    tags = world.arm.jobs[job]["properties"]["tags"]
    [deploy] = world.deliver(upstream_event(run_id=job, experiment="diabetes-retrain", tags=tags)).decisions
    assert (deploy.action, deploy.outcome) == ("deploy", "pending"), deploy.reason

    with pytest.raises(Forbidden, match=f"created run {RUN}, the upstream run of the retrain decision {retrain.id}"):
        approve_as(world, deploy.id, ADA_ELSEWHERE)
    done = approve_as(world, deploy.id, BOB_CALLER)
    compared = [c.get("run") or c.get("data") for c in done.details["approval"]["creators"]]
    assert done.outcome == "submitted" and compared == [job, RUN, f"{DATASET}:2"]


def test_explain_reads_the_run_and_says_why_the_retrain_would_start(tmp_path: Path) -> None:
    world = world_with(tmp_path)
    env = envelope_from_dict(upstream_event())
    [checked] = world.worker.explain([env], check=True)
    [(decision, preview)] = checked.decisions
    assert isinstance(decision, Retrain) and decision.reason.startswith(f"upstream run {RUN} (nightly ingestion)")
    assert preview is not None and job_puts(world) == []
    [unchecked] = world.worker.explain([env], check=False)  # nothing asked of Azure: the event alone is not trusted
    [(skipped, _)] = unchecked.decisions
    assert isinstance(skipped, Skip) and "was not read from the workspace" in skipped.reason


@pytest.mark.parametrize(
    ("runs", "says"),
    [
        ("[{experiment: 'azureml://x/y'}]", "retrain.on.runs.0.experiment"),
        ("[{display_name: nightly}]", "retrain.on.runs.0.experiment"),
        ("[{experiment: ingest, schedule: nightly}]", "retrain.on.runs.0.schedule"),
        ("{experiment: ingest}", "retrain.on.runs"),
    ],
)
def test_a_bad_upstream_run_rule_names_the_key(runs: str, says: str) -> None:
    text = f"""
models:
  m:
    retrain:
      pipeline: "p:1"
      on:
        runs: {runs}
"""
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "policy.yaml")
    assert says in str(caught.value)
