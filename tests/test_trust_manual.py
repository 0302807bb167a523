"""DESIGN guarantee 7 for the manual routes, tried as a holder of the function key would: an
Idempotency-Key is bound to its model and request, numbers and versions outside what the policy
allows are a 400 naming the field, a path input is held to the rule event data is, and with sign-in
on only a signed-in operator with the role is heard, and recorded as who asked. Events from the
workspace: tests/test_trust_boundary.py."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from handlers.policy_file import parse_policy
from tests.azure_world import MODEL
from tests.azurite import free_port
from tests.hosts import RunningHost, start_host
from tests.world import App


def strict(raw: bytes) -> Any:
    """Parse as a strict JSON parser does: NaN and Infinity are errors."""
    return json.loads(raw, parse_constant=lambda name: pytest.fail(f"the reply holds {name}"))


# --------------------------------------------------------------------------- 1. idempotency keys


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


# --------------------------------------------------------------------------- 2. numbers


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


# --------------------------------------------------------------------------- 3. who asked


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


# --------------------------------------------------------------------------- 4. a path input


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
