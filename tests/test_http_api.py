"""The HTTP functions as the local host dispatches them (the app's own registered functions)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.builders import MODEL, cloud, drift_event
from tests.conftest import Client, load_sample
from tests.world import App


def test_the_anonymous_health_route_tells_status_and_version_only(client: Client) -> None:
    status, _, body = client.call("GET", "/api/health")
    assert (status, body) == (200, {"status": "ok", "version": "0.1.0"})


def test_the_configuration_is_behind_a_key_and_holds_no_secrets(client: Client) -> None:
    # its auth level (FUNCTION) is checked with every route's in tests/test_layout.py
    status, _, body = client.call("GET", "/api/config")
    assert status == 200 and body["status"] == "ok" and body["backend"] == "dryrun"
    assert body["settings"]["workspace"].endswith("/workspaces/{workspace-name}")
    assert "AccountKey" not in json.dumps(body)


def test_the_version_the_app_reports_is_the_package_version() -> None:
    import tomllib

    from function_app.triggers.api import VERSION
    from tests.conftest import REPO

    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"] == VERSION


def test_validation_event_gets_its_validation_response(client: Client) -> None:
    sample = load_sample("Microsoft.EventGrid.SubscriptionValidationEvent.eventgrid.json")
    expected = load_sample("Microsoft.EventGrid.SubscriptionValidationEvent.response.json")
    status, _, body = client.call("POST", "/api/events", sample, {"aeg-event-type": "SubscriptionValidation"})
    assert (status, body) == (200, expected)


def test_cloudevents_options_handshake_echoes_the_origin(client: Client) -> None:
    status, headers, _ = client.call(
        "OPTIONS", "/api/events", headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
    )
    assert status == 200 and headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


def test_cloudevents_batch_is_processed(client: Client) -> None:
    batch = [cloud(drift_event(event_id="c1")), cloud(drift_event(monitor="nobody", event_id="c2"))]
    status, _, body = client.call("POST", "/api/events", batch, {"Content-Type": "application/cloudevents-batch+json"})
    assert status == 200
    outcomes = [r["decisions"][0]["outcome"] for r in body["results"]]
    assert outcomes == ["planned", "skipped"]


def test_malformed_webhook_body_is_a_400_with_a_json_error(client: Client) -> None:
    status, _, body = client.call("POST", "/api/events", b"{nope")
    assert status == 400 and "not valid JSON" in body["error"]


def test_manual_retrain_of_unknown_model_is_404(client: Client) -> None:
    status, _, body = client.call("POST", "/api/models/nope/retrain", {"reason": "x"})
    assert status == 404 and "'nope' is not in the policy" in body["error"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[1, 2]", "must be a JSON object"),
        (b"{oops", "not valid JSON"),
        ({"reason": "x", "dryrun": True}, "unknown field(s) 'dryrun'"),
        ({"reason": 5}, "'reason' must be a string"),
        ({"dry_run": "yes"}, "'dry_run' must be true or false"),
        ({"inputs": {"training_data": "azureml:x:1"}}, "'training_data' may not be overridden"),
    ],
)
def test_bad_manual_retrain_bodies_are_400_with_a_json_error(client: Client, body: Any, says: str) -> None:
    status, _, reply = client.call("POST", f"/api/models/{MODEL}/retrain", body)
    assert status == 400 and says in reply["error"]


def test_manual_dry_run_is_200_with_the_rendered_job(client: Client) -> None:
    status, _, rec = client.call(
        "POST",
        f"/api/models/{MODEL}/retrain",
        {"reason": "new labels", "dry_run": True, "inputs": {"learning_rate": 0.1}},
    )
    assert status == 200 and rec["outcome"] == "planned" and rec["reason"] == "manual request: new labels"
    rendered = rec["details"]["rendered"]
    assert rendered["inputs"]["learning_rate"]["value"] == 0.1 and rendered["component"] == "diabetes-retrain:3"
    assert set(rec) >= {"id", "model", "action", "outcome", "reason", "trigger", "job", "at"}


def test_manual_retrain_inside_cooldown_is_409(client: Client) -> None:
    assert client.call("POST", f"/api/models/{MODEL}/retrain", {"reason": "first"})[0] == 200
    status, _, body = client.call("POST", f"/api/models/{MODEL}/retrain", {"reason": "second"})
    assert status == 409 and "cooldown" in body["error"]


def test_idempotency_key_makes_a_manual_request_count_once(client: Client) -> None:
    headers = {"Idempotency-Key": "k-1"}
    first = client.call("POST", f"/api/models/{MODEL}/retrain", {"reason": "r"}, headers)
    second = client.call("POST", f"/api/models/{MODEL}/retrain", {"reason": "r"}, headers)
    assert first[0] == second[0] == 200 and first[2]["id"] == second[2]["id"]


def test_deploy_needs_a_version(client: Client) -> None:
    status, _, body = client.call("POST", f"/api/models/{MODEL}/deploy", {"dry_run": True})
    assert status == 400 and "'version' is required" in body["error"]
    status, _, rec = client.call("POST", f"/api/models/{MODEL}/deploy", {"version": 7, "dry_run": True})
    assert status == 200 and rec["details"]["rendered"]["candidate"]["version"] == "7"


def test_models_and_decisions_read_back_the_ledger(client: Client) -> None:
    client.call("POST", "/api/events", [drift_event(event_id="d1")])
    _, _, models = client.call("GET", "/api/models")
    view = next(m for m in models["models"] if m["model"] == MODEL)
    assert view["state"] == "cooldown" and view["cooldown_until"] and view["last_decision"]["outcome"] == "planned"
    _, _, trail = client.call("GET", f"/api/decisions?model={MODEL}&limit=5")
    assert [d["trigger"]["event_id"] for d in trail["decisions"]] == ["d1"]
    assert client.call("GET", "/api/decisions?limit=abc")[0] == 400


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("limit=%C2%B2", "whole number from 1 to 1000"),  # "²": a digit to str.isdigit(), not to int()
        ("limit=-1", "whole number from 1 to 1000"),
        ("limit=" + "9" * 5000, "whole number from 1 to 1000"),
        ("since=0001-01-01T00:00:00%2B14:00", "between years 1 and 9999"),  # before the first UTC time
        ("since=9999-12-31T23:59:59-14:00", "between years 1 and 9999"),  # after the last
        ("since=" + "x" * 5000, "give an ISO 8601 time"),  # the reply does not echo all of it back
        ("outcome=" + "x" * 5000, "give one of"),
    ],
)
def test_a_bad_decisions_query_is_a_400_saying_what_is_wrong(app: App, query: str, says: str) -> None:
    status, _, body = app.client.call("GET", f"/api/decisions?{query}")
    assert status == 400 and says in body["error"] and len(body["error"]) < 200, body


def test_unknown_route_and_wrong_method(client: Client) -> None:
    assert client.call("GET", "/api/nothing")[0] == 404
    assert client.call("GET", f"/api/models/{MODEL}/retrain")[0] == 405


def test_event_grid_runtime_route_delivers_to_the_trigger_function(client: Client) -> None:
    status, _, _ = client.call(
        "POST",
        "/runtime/webhooks/eventgrid?functionName=on_workspace_event",
        [drift_event(event_id="rt-1")],
        {"aeg-event-type": "Notification"},
    )
    assert status == 200
    _, _, trail = client.call("GET", "/api/decisions?limit=1")
    assert trail["decisions"][0]["trigger"]["event_id"] == "rt-1"
    assert client.call("POST", "/runtime/webhooks/eventgrid?functionName=nope", [])[0] == 404


def test_a_function_that_raises_gets_a_500_like_the_functions_host(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from function_app import runtime

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("ledger exploded")

    monkeypatch.setattr(runtime.get_retrainer().ledger, "decisions", broken)
    status, _, body = client.call("GET", "/api/decisions")
    assert status == 500 and body == {"error": "function list_decisions failed: RuntimeError"}
