"""Job-name squatting (issue 21, finding 1): a workspace user creates the job the service is about to
submit, under its name, before the service does. The service must adopt only a job that is provably
its own (this decision's tags, the plan's experiment and component, created by the service's own
identity as the job's ``systemData`` says), record anything else as a ``failed`` decision that names
who created it, and deploy nothing from it; and it must name its jobs with a key no workspace user
holds (RETRAIN_JOB_NAME_KEY), so that the name cannot be predicted in the first place.

Through the real azure-ai-ml SDK against the fake ARM (tests/azure_world.py), on SQLite (the crashes on both ledgers); the
workspace user is another identity with their own ``MLClient`` on the same workspace, whose token
ARM records as the job's creator. The same attack on the candidate deployment (and its model version) is
in tests/test_job_squatting_deployments.py.
"""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from azure.ai.ml.entities import PipelineJob

from function_app import runtime
from function_app.settings import JOB_NAME_KEY_FILE, Settings, job_name_key
from handlers.decisions import decide
from handlers.envelopes import envelope_from_dict, to_signal, workspace_key
from handlers.errors import TransientError
from handlers.jobnames import job_name
from handlers.plans import Retrain
from tests.azure_world import (
    DRIFT_SAMPLE,
    ENDPOINT,
    JOB_NAME_KEY,
    MODEL,
    WORKSPACE_ID,
    AzureWorld,
    DiesAfterActing,
    WorkerDied,
    in_workspace,
)
from tests.builders import EXAMPLE_POLICY, run_event
from tests.conftest import workspace_user
from tests.fake_http import APP_CLIENT_ID, USER_CLAIMS, USER_UPN
from tests.world import App

EXPERIMENT = "diabetes-retrain"  # the experiment the example policy retrains in


def public_job_name(raw: dict[str, Any]) -> str:
    """The job name anyone who reads the code can compute from an event: the plan's own name, a
    digest of the event's public parts (what the service submitted under before the key)."""
    workspaces = frozenset({workspace_key(WORKSPACE_ID)})
    signal = to_signal(envelope_from_dict(raw), workspaces)
    [decision] = decide(signal, EXAMPLE_POLICY, workspaces)
    assert isinstance(decision, Retrain)
    return decision.job.name


def squat(
    azure: AzureWorld,
    name: str,
    *,
    experiment: str = EXPERIMENT,
    component: tuple[str, str] = ("diabetes-retrain", "3"),
    tags: dict[str, str] | None = None,
) -> None:
    """The workspace user submits a pipeline job named ``name`` (through the SDK, as themselves)."""
    job = PipelineJob(
        component=azure.arm.arm_id("components", *component[:1], "versions", component[1]),
        inputs={"learning_rate": 0.5},
        name=name,
        experiment_name=experiment,
        compute="cpu-cluster",
        tags=dict(tags or {}),
    )
    workspace_user(azure).jobs.create_or_update(job, skip_validation=True)
    assert (
        azure.arm.jobs[name]["systemData"]["createdBy"] == USER_CLAIMS["name"]
    )  # a person by display name, as Azure ML records a job's creator


def first_delivery_fails(azure: AzureWorld, raw: dict[str, Any]) -> str:
    """The service's first try meets an Azure ML outage when it submits: the decision stays reserved
    (Event Grid delivers again), under the job name it will submit. Returns that name."""
    azure.arm.fail(503, method="PUT", path=r"^jobs/", times=1000)
    with pytest.raises(TransientError):
        azure.deliver(raw)
    azure.arm.faults.clear()
    [reserved] = azure.service.ledger.decisions(outcome="reserved")
    name = str(reserved.job["name"])  # type: ignore[index]
    assert name not in azure.arm.jobs
    return name


def nothing_deployed(azure: AzureWorld) -> None:
    assert azure.arm.requests_to("PUT", r"^onlineEndpoints/") == []
    assert azure.arm.requests_to("PUT", r"^models/") == []
    assert azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {"blue": 100}
    assert list(azure.arm.deployments) == [(ENDPOINT, "blue")]


# --------------------------------------------------------------------------- adopting


@pytest.mark.parametrize(
    ("variant", "why"),
    [
        ("experiment", "experiment 'mallory-sandbox'"),
        ("component", "runs component"),
        ("tags", "tags"),
        ("creator", "did not create it"),
    ],
)
def test_a_job_someone_else_created_under_the_name_is_a_failed_decision_naming_them(
    azure: AzureWorld, variant: str, why: str
) -> None:
    """The workspace user learned the name (leaked, or read off the studio) and created the job
    first: in an experiment of their choosing, from another component, without this decision's tags,
    or exactly as the service would have, only as themselves. None of it is adopted."""
    raw = in_workspace(DRIFT_SAMPLE)
    name = first_delivery_fails(azure, raw)
    [reserved] = azure.service.ledger.decisions(outcome="reserved")
    tags = dict(reserved.details["rendered"]["tags"])
    azure.arm.add_component("exfiltrate", "1", inputs={"learning_rate": "number"})
    squat(
        azure,
        name,
        experiment="mallory-sandbox" if variant == "experiment" else EXPERIMENT,
        component=("exfiltrate", "1") if variant == "component" else ("diabetes-retrain", "3"),
        tags={} if variant == "tags" else tags,
    )

    puts = len(azure.arm.job_puts)  # the service's tries (503s) and the squatter's
    azure.now.advance(minutes=2)  # the first delivery's claim has lapsed: Event Grid delivers again
    [rec] = azure.deliver(raw).decisions
    assert (rec.action, rec.outcome) == ("retrain", "failed"), rec.reason
    assert f"pipeline job {name} already exists" in rec.reason
    assert USER_CLAIMS["name"] in rec.reason and "(User)" in rec.reason, rec.reason  # who created it
    assert why in rec.reason
    assert "mallory-sandbox" in rec.reason if variant == "experiment" else f"{EXPERIMENT!r}" in rec.reason
    assert "adopted" not in rec.details
    assert len(azure.arm.job_puts) == puts  # nothing submitted since
    assert "retrain" not in azure.ledger.get_model(MODEL).flights  # the slot is free, holding no job of theirs
    nothing_deployed(azure)


def test_the_squatters_run_finishing_is_not_taken_for_the_services_and_deploys_nothing(azure: AzureWorld) -> None:
    """The issue's attack end to end: a job in an experiment of the squatter's choosing, with this
    decision's tags, that finishes with a metric that beats the champion."""
    raw = in_workspace(DRIFT_SAMPLE)
    name = first_delivery_fails(azure, raw)
    [reserved] = azure.service.ledger.decisions(outcome="reserved")
    tags = dict(reserved.details["rendered"]["tags"])
    squat(azure, name, experiment="mallory-sandbox", tags=tags)
    azure.now.advance(minutes=2)
    [rec] = azure.deliver(raw).decisions
    assert rec.outcome == "failed"

    azure.arm.set_job_status(name, "Completed")
    azure.arm.add_step(name, "evaluate_model", metrics={"r2_score": 0.99})
    finished = run_event(run_id=name, experiment="mallory-sandbox", tags=tags, topic=WORKSPACE_ID)
    [after] = azure.deliver(finished).decisions
    assert after.action != "deploy" and after.outcome == "skipped", after.reason
    nothing_deployed(azure)


def test_a_squatters_run_that_finishes_while_the_decision_is_only_reserved_is_not_the_services(
    azure: AzureWorld,
) -> None:
    """The reservation names the job before it exists: a run of that name that ends before the
    service has submitted (or adopted) anything is not the service's, whatever its tags say."""
    raw = in_workspace(DRIFT_SAMPLE)
    name = first_delivery_fails(azure, raw)
    [reserved] = azure.service.ledger.decisions(outcome="reserved")
    tags = dict(reserved.details["rendered"]["tags"])
    squat(azure, name, experiment="mallory-sandbox", tags=tags)
    azure.arm.set_job_status(name, "Completed")
    azure.arm.add_step(name, "evaluate_model", metrics={"r2_score": 0.99})

    finished = run_event(run_id=name, experiment="mallory-sandbox", tags=tags, topic=WORKSPACE_ID)
    [rec] = azure.deliver(finished).decisions
    assert rec.action != "deploy" and rec.outcome == "skipped", rec.reason
    nothing_deployed(azure)


@pytest.mark.parametrize("same_inputs", [True, False])
def test_a_squatted_job_met_at_the_submission_itself_is_not_taken_for_the_services(
    azure: AzureWorld, same_inputs: bool
) -> None:
    """The squatter creates the job between the service's look and its PUT: Azure ML answers the PUT
    as an update of their job (same component and inputs), which is still theirs; or refuses it (other
    inputs), and the job the service then finds under the name is theirs too."""
    raw = in_workspace(DRIFT_SAMPLE)
    name = first_delivery_fails(azure, raw)
    [reserved] = azure.service.ledger.decisions(outcome="reserved")
    rendered = reserved.details["rendered"]

    def squatter_gets_there_first() -> None:
        body = copy.deepcopy(azure.arm.job_puts[-1].body["properties"])
        if not same_inputs:
            body["inputs"]["learning_rate"]["value"] = "0.5"
        azure.arm.jobs[name] = azure.arm._job_resource(
            name,
            {k: v for k, v in body.items() if k != "tags"} | {"tags": dict(rendered["tags"])},
            "Running",
            {"createdAt": "2026-11-25T00:00:00Z", "createdBy": USER_UPN, "createdByType": "User"},
        )

    azure.arm.before("PUT", r"^jobs/", squatter_gets_there_first)
    azure.now.advance(minutes=2)
    [rec] = azure.deliver(raw).decisions
    assert rec.outcome == "failed" and USER_UPN in rec.reason, rec.reason
    assert [c.status for c in azure.arm.job_puts][-1] == (200 if same_inputs else 400)
    nothing_deployed(azure)


@pytest.mark.both_ledgers
def test_the_services_own_redelivery_still_adopts_its_own_job(azure: AzureWorld) -> None:
    raw = in_workspace(DRIFT_SAMPLE)
    with pytest.raises(WorkerDied):  # submitted, then died before recording it
        azure.deliver(raw, azure.new_worker(DiesAfterActing(azure.actions)))
    [name] = list(azure.arm.jobs)
    created = azure.arm.jobs[name]["systemData"]
    assert (created["createdBy"], created["createdByType"]) == (APP_CLIENT_ID, "ManagedIdentity")

    azure.now.advance(minutes=2)
    [rec] = azure.deliver(raw, azure.new_worker()).decisions
    assert (rec.outcome, rec.details.get("adopted")) == ("submitted", True), rec.reason
    assert rec.job["name"] == name  # type: ignore[index]
    assert len(azure.arm.job_puts) == 1


@pytest.mark.both_ledgers
def test_a_redelivery_after_the_key_is_rotated_adopts_the_job_its_reservation_named(azure: AzureWorld) -> None:
    """The worker died after submitting; the key is rotated before the redelivery. The reservation
    recorded the name it submitted under, so the redelivery adopts that job, not a second one."""
    raw = in_workspace(DRIFT_SAMPLE)
    with pytest.raises(WorkerDied):
        azure.deliver(raw, azure.new_worker(DiesAfterActing(azure.actions)))
    [name] = list(azure.arm.jobs)

    azure.now.advance(minutes=2)
    rotated = azure.new_worker(job_name_key=b"a-new-key-after-rotation-0123456789abcdef")
    [rec] = azure.deliver(raw, rotated).decisions
    assert (rec.outcome, rec.details.get("adopted")) == ("submitted", True), rec.reason
    assert rec.job["name"] == name and list(azure.arm.jobs) == [name]  # type: ignore[index]


# --------------------------------------------------------------------------- unguessable names


def test_the_job_name_cannot_be_computed_from_the_event_without_the_key(azure: AzureWorld) -> None:
    """The squatter computes the name from the event (a monitor's schedule, a date-based key make it
    predictable) and creates that job first: the service names its own differently, and submits it."""
    raw = in_workspace(DRIFT_SAMPLE)
    predicted = public_job_name(raw)
    squat(azure, predicted, experiment="mallory-sandbox")

    [rec] = azure.deliver(raw).decisions
    assert (rec.outcome, rec.details.get("adopted")) == ("submitted", None), rec.reason
    name = rec.job["name"]  # type: ignore[index]
    assert name != predicted and name == job_name(JOB_NAME_KEY.encode(), MODEL, rec.id)
    assert azure.arm.jobs[name]["systemData"]["createdBy"] == APP_CLIENT_ID
    assert name != job_name(b"any-other-key-0123456789abcdef-0123456789", MODEL, rec.id)


def test_a_local_service_keeps_its_job_name_key_in_a_private_file_beside_the_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "state" / "ledger.db"
    settings = Settings.from_env({"RETRAIN_SQLITE_PATH": str(ledger)})
    first = job_name_key(settings, ledger)
    key_file = ledger.parent / JOB_NAME_KEY_FILE
    assert key_file.is_file() and len(first) == 64
    if os.name == "posix":
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert job_name_key(settings, ledger) == first  # the same names on the next start: redeliveries adopt
    assert job_name_key(Settings.from_env({"RETRAIN_JOB_NAME_KEY": "k" * 40}), ledger) == b"k" * 40


def test_the_table_ledger_without_a_job_name_key_is_a_start_up_error_saying_how_to_set_it() -> None:
    env = {"RETRAIN_LEDGER": "table", "RETRAIN_TABLES_ACCOUNT_URL": "https://st.table.core.windows.net"}
    with pytest.raises(ValueError, match=r"RETRAIN_JOB_NAME_KEY is required with RETRAIN_LEDGER=table.*azd env set"):
        runtime.build(Settings.from_env(env))
    with pytest.raises(ValueError, match=r"RETRAIN_JOB_NAME_KEY is 5 characters.*at least 32"):
        Settings.from_env({**env, "RETRAIN_JOB_NAME_KEY": "short"})
    assert Settings.from_env({**env, "RETRAIN_JOB_NAME_KEY": "x" * 64}).job_name_key == "x" * 64


def test_retrain_explain_renders_the_job_name_the_service_would_submit_under(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from function_app.cli import main as cli
    from tests.conftest import REPO

    monkeypatch.setenv("RETRAIN_SQLITE_PATH", str(tmp_path / "ledger.db"))
    monkeypatch.setenv("RETRAIN_JOB_NAME_KEY", JOB_NAME_KEY)
    assert cli(["explain", str(REPO / "examples" / "events" / "drift.eventgrid.json")]) == 0
    out = capsys.readouterr().out
    decision = out.split("decide  retrain model=", 1)[1].split("id=", 1)[1].split()[0]
    model = out.split("decide  retrain model=", 1)[1].split()[0]
    assert f'"name": "{job_name(JOB_NAME_KEY.encode(), model, decision)}"' in out
    assert not (tmp_path / JOB_NAME_KEY_FILE).exists()  # explaining generates no key


def test_the_app_names_its_jobs_with_the_key_it_keeps_beside_its_sqlite_ledger_or_is_given(app: App) -> None:
    """Through the local host (dry-run backend): the job a drift event's decision names is the keyed
    digest, under RETRAIN_JOB_NAME_KEY (Table ledger) or the key file the app made beside its SQLite
    ledger, private to its owner; never the public digest of the event."""
    from tests.builders import drift_event
    from tests.conftest import TEST_JOB_NAME_KEY

    raw = drift_event(event_id="keyed-1")
    status, _ = app.deliver("/runtime/webhooks/eventgrid?functionName=on_workspace_event", [raw])
    assert status == 200
    [rec] = app.decisions_of("keyed-1")
    assert rec.action == "retrain", rec.reason
    if app.spec.kind == "sqlite":
        key_file = Path(app.spec.target).parent / JOB_NAME_KEY_FILE
        key = key_file.read_text(encoding="ascii").strip().encode()
        if os.name == "posix":
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    else:
        key = TEST_JOB_NAME_KEY.encode()
    assert rec.job["name"] == job_name(key, MODEL, rec.id)
    assert rec.id.split("-", 1)[1] not in rec.job["name"]
