"""DESIGN guarantee 7, tried as an attacker with a workspace account (or a function key) would: nothing
that arrives steers the service's identity beyond what the policy allows. Each observation of issue
9, through the local host on SQLite, now gives the safe answer; and the service's own runs
still deploy, through the real Azure ML SDK against the fake ARM."""

from __future__ import annotations

import base64
import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from handlers.policy_file import parse_policy
from tests.azure_world import DRIFT_SAMPLE, ENDPOINT, MODEL, AzureWorld, in_workspace
from tests.azurite import free_port
from tests.builders import ML, breach_event, drift_event, event, run_event
from tests.conftest import REPO
from tests.hosts import RunningHost, start_host
from tests.ledgers import LedgerSpec
from tests.world import App

RUN_COMPLETED = ML + "RunCompleted"
RUN_STATUS = ML + "RunStatusChanged"
ALERT = json.loads((REPO / "examples" / "events" / "alert.common-schema.json").read_text())
OTHER_WORKSPACE = (
    "/subscriptions/00000000-0000-0000-0000-00000000beef/resourceGroups/theirs"
    "/providers/Microsoft.MachineLearningServices/workspaces/theirs"
)


def strict(raw: bytes) -> Any:
    """Parse as a strict JSON parser does: NaN and Infinity are errors."""
    return json.loads(raw, parse_constant=lambda name: pytest.fail(f"the reply holds {name}"))


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


# --------------------------------------------------------------------------- 4. idempotency keys


def manual(app: App, model: str, body: dict[str, Any], key: str | None, action: str = "retrain") -> tuple[int, Any]:
    status, _, raw = app.client.host.dispatch(
        "POST", f"/api/models/{model}/{action}", {"Idempotency-Key": key} if key else {}, json.dumps(body).encode()
    )
    return status, strict(raw)


def test_a_key_is_scoped_to_its_model_so_another_model_with_the_same_key_is_another_request(app: App) -> None:
    status, churn = manual(app, "churn-classifier", {"dry_run": True}, "K1")
    assert status == 200 and churn["model"] == "churn-classifier"
    status, sklearn = manual(app, MODEL, {"reason": "real"}, "K1")
    assert status == 200 and sklearn["model"] == MODEL and sklearn["action"] == "retrain"
    assert sklearn["id"] != churn["id"] and sklearn["outcome"] == "planned"


def test_a_key_reused_with_another_request_is_a_422_naming_the_original_which_stays_untouched(app: App) -> None:
    status, first = manual(app, MODEL, {"dry_run": True, "reason": "look first"}, "K2")
    assert status == 200 and first["outcome"] == "planned"

    status, refused = manual(app, MODEL, {"reason": "now for real"}, "K2")

    assert status == 422
    assert "Idempotency-Key 'K2' was first used at" in refused["error"] and first["id"] in refused["error"]
    assert app.ledger.get_decision(first["id"]).to_dict() == first  # type: ignore[union-attr]
    assert [r.id for r in app.ledger.decisions(MODEL)] == [first["id"]]
    status, again = manual(app, MODEL, {"dry_run": True, "reason": "look first"}, "K2")  # the same request
    assert (status, again) == (200, first)


@pytest.mark.parametrize("key", ["x" * 256, "tab\there", "ключ"])
def test_a_key_that_is_not_1_to_255_printable_ascii_characters_is_a_400(app: App, key: str) -> None:
    status, _, raw = app.client.host.dispatch(
        "POST", f"/api/models/{MODEL}/retrain", {"Idempotency-Key": key}, b'{"dry_run": true}'
    )
    assert status == 400 and "Idempotency-Key must be 1 to 255 printable ASCII characters" in strict(raw)["error"]
    assert app.ledger.decisions() == []


# --------------------------------------------------------------------------- 5. numbers


@pytest.mark.parametrize(
    ("raw_body", "says"),
    [
        (
            b'{"inputs": {"learning_rate": 1e999}}',
            "the number at inputs.learning_rate is not a finite number (it reads as inf",
        ),
        (
            b'{"inputs": {"learning_rate": NaN}}',
            "the number at inputs.learning_rate is not a finite number (it reads as nan",
        ),
        (
            b'{"inputs": {"learning_rate": -Infinity}}',
            "the number at inputs.learning_rate is not a finite number (it reads as -inf",
        ),
        (b'{"inputs": {"learning_rate": {"$ne": 1}}}', "input 'learning_rate' takes a number, a string or true/false"),
        (b'{"inputs": {"learning_rate": -1}}', "input 'learning_rate' must be at least 1e-05"),
        (b'{"inputs": {"max_epochs": 100000}}', "input 'max_epochs' must be at most 500.0"),
        (b'{"inputs": {"max_epochs": "many"}}', "input 'max_epochs' must be a number"),
    ],
)
def test_numbers_out_of_range_or_not_numbers_are_a_400_naming_the_field(app: App, raw_body: bytes, says: str) -> None:
    status, _, raw = app.client.host.dispatch("POST", f"/api/models/{MODEL}/retrain", {}, raw_body)
    assert status == 400 and says in strict(raw)["error"]
    assert app.ledger.decisions() == []
    status, _, listed = app.client.host.dispatch("GET", "/api/decisions", {}, b"")
    assert status == 200 and strict(listed) == {"decisions": []}


@pytest.mark.parametrize("version", ["-1", "0", "1" * 400, "7.5", "champion", "1e3"])
def test_a_deploy_version_that_is_no_version_number_or_latest_is_a_400(app: App, version: str) -> None:
    status, body = manual(app, MODEL, {"version": version, "dry_run": True}, None, action="deploy")
    assert status == 400 and "field 'version' must be a model version number" in body["error"]


def test_a_deploy_of_latest_or_a_number_is_planned(app: App) -> None:
    for version in ("latest", "12", 12):
        status, body = manual(app, MODEL, {"version": version, "dry_run": True}, None, action="deploy")
        assert status == 200 and body["action"] == "deploy", body


# --------------------------------------------------------------------------- 6. thresholds fail closed


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


# --------------------------------------------------------------------------- 7. who asked


def principal(*roles: str) -> str:
    claims = [{"typ": "roles", "val": r} for r in roles] + [{"typ": "name", "val": "Ada Ops"}]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()


def test_without_sign_in_the_caller_is_recorded_as_the_function_key(app: App) -> None:
    status, rec = manual(app, MODEL, {"dry_run": True}, None)
    assert status == 200 and rec["trigger"]["caller"] == {"kind": "function key"}
    status, _, raw = app.client.host.dispatch("GET", "/api/decisions", {}, b"")
    assert strict(raw)["decisions"][0]["trigger"]["caller"] == {"kind": "function key"}


@pytest.fixture
def signed_in(app: App, monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.setenv("RETRAIN_APP_SERVICE_AUTH", "true")
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")  # what App Service sets while its sign-in is on
    return app


def test_sign_in_said_on_while_the_platform_s_is_off_trusts_no_principal(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without App Service authentication nothing strips client-sent principal headers: a key holder's
    forged operator is refused, not recorded as who asked."""
    monkeypatch.setenv("RETRAIN_APP_SERVICE_AUTH", "true")
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    forged = {"X-MS-CLIENT-PRINCIPAL": principal("Retrain.Operator"), "X-MS-CLIENT-PRINCIPAL-NAME": "ceo@contoso"}
    for route in ("retrain", "rollback"):
        status, _, raw = app.client.host.dispatch("POST", f"/api/models/{MODEL}/{route}", forged, b"{}")
        assert status == 403 and "WEBSITE_AUTH_ENABLED is not True" in strict(raw)["error"]
    assert app.ledger.decisions() == []


def test_start_up_says_loudly_that_principal_headers_are_not_trusted_without_platform_sign_in(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {"RETRAIN_SQLITE_PATH": str(tmp_path / "l.db"), "RETRAIN_APP_SERVICE_AUTH": "true", "PORT": str(port)}
    proc = start_host(env, port)
    try:
        host = RunningHost(port)
        for _ in range(300):
            try:
                if host.request("GET", "/api/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "SECURITY: RETRAIN_APP_SERVICE_AUTH=true but App Service authentication is off" in err
    assert "claim any identity" in err


def test_with_sign_in_the_principal_is_required_checked_for_the_role_and_recorded(signed_in: App) -> None:
    headers = {
        "X-MS-CLIENT-PRINCIPAL": principal("Retrain.Operator"),
        "X-MS-CLIENT-PRINCIPAL-NAME": "ada@contoso.example",
        "X-MS-CLIENT-PRINCIPAL-ID": "6f1e0000-0000-4000-8000-00000000ada0",
    }
    status, _, raw = signed_in.client.host.dispatch(
        "POST", f"/api/models/{MODEL}/retrain", headers, b'{"dry_run": true}'
    )
    assert status == 200
    assert strict(raw)["trigger"]["caller"] == {
        "kind": "principal",
        "provider": "aad",
        "name": "ada@contoso.example",
        "id": "6f1e0000-0000-4000-8000-00000000ada0",
        "roles": "Retrain.Operator",
    }

    no_role = {**headers, "X-MS-CLIENT-PRINCIPAL": principal("Reader")}
    status, _, raw = signed_in.client.host.dispatch("POST", f"/api/models/{MODEL}/retrain", no_role, b"{}")
    assert status == 403 and "lacks the app role 'Retrain.Operator'" in strict(raw)["error"]
    status, _, raw = signed_in.client.host.dispatch("POST", f"/api/models/{MODEL}/retrain", {}, b"{}")
    assert status == 401 and "carries no signed-in principal" in strict(raw)["error"]
    no_id = {k: v for k, v in headers.items() if k != "X-MS-CLIENT-PRINCIPAL-ID"}  # a name is no identity
    status, _, raw = signed_in.client.host.dispatch("POST", f"/api/models/{MODEL}/retrain", no_id, b"{}")
    assert status == 401 and "X-MS-CLIENT-PRINCIPAL-ID" in strict(raw)["error"].upper()
    bad = {"X-MS-CLIENT-PRINCIPAL": "not base64!"}
    assert signed_in.client.host.dispatch("POST", f"/api/models/{MODEL}/retrain", bad, b"{}")[0] == 401
    assert len(signed_in.ledger.decisions()) == 1  # only the signed-in operator's request


def test_the_cli_shows_who_asked(app: App, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from function_app.cli import main as cli

    manual(app, MODEL, {"dry_run": True, "reason": "check"}, None)
    assert cli(["decisions", "--model", MODEL]) == 0
    assert "asked by: function key" in capsys.readouterr().out


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


def test_a_path_input_a_manual_request_may_override_is_held_to_the_same_rule_as_event_data() -> None:
    from handlers.errors import InvalidInput
    from handlers.inputs import check_manual
    from handlers.signals import ManualRequest, Trigger

    policy = parse_policy(
        """
models:
  m:
    retrain:
      pipeline: p:1
      inputs:
        data: {type: uri_folder, value: "azureml:d@latest"}
      overridable: [data]
"""
    )

    def request(value: str) -> ManualRequest:
        return ManualRequest(Trigger("http", "r", "ManualRequest.retrain"), "m", "retrain", "x", inputs={"data": value})

    with pytest.raises(InvalidInput, match=r"input 'data' was sent as 'https://attacker.example/x': not a data asset"):
        check_manual(request("https://attacker.example/x"), policy)
    check_manual(request("azureml:curated:4"), policy)  # an asset of the workspace
