"""The policy's ``deploy.rollout.smoke`` keys: what is accepted, and errors that name the key and the fix."""

from __future__ import annotations

from datetime import timedelta

import pytest

from handlers.errors import PolicyError
from handlers.policy_file import parse_policy
from handlers.rollout_rules import SmokeData, SmokeRule

KEY = "policy.yaml: models.churn.deploy.rollout.smoke"


def smoke(body: str) -> SmokeRule | None:
    policy = parse_policy(
        f"""
models:
  churn:
    deploy:
      endpoint: churn-endpoint
      rollout:
        smoke: {body}
"""
    )
    deploy = policy.models["churn"].deploy
    assert deploy is not None
    return deploy.rollout.smoke


def error(body: str) -> str:
    with pytest.raises(PolicyError) as raised:
        smoke(body)
    [message] = raised.value.problems
    return message


def test_a_rollout_without_smoke_has_none() -> None:
    policy = parse_policy("models:\n  churn:\n    deploy: {endpoint: churn-endpoint}\n")
    assert policy.models["churn"].deploy is not None
    assert policy.models["churn"].deploy.rollout.smoke is None


def test_inline_requests_with_the_defaults() -> None:
    rule = smoke('{requests: [{"data": [[1, 2, 3]]}, {"data": [[4, 5, 6]]}]}')
    assert rule is not None
    assert rule.requests == [{"data": [[1, 2, 3]]}, {"data": [[4, 5, 6]]}]
    assert (rule.status, rule.response_schema, rule.champion, rule.timeout) == (200, None, None, timedelta(seconds=10))


def test_a_schema_and_a_champion_comparison() -> None:
    rule = smoke(
        '{requests: [{"data": [[1]]}], response_schema: {type: object, required: [predictions]}, '
        "champion: {field: predictions, abs_tolerance: 0.1, rel_tolerance: 0.05}, timeout: 5s, status: 200}"
    )
    assert rule is not None and rule.champion is not None
    assert rule.response_schema == {"type": "object", "required": ["predictions"]}
    assert (rule.champion.field, rule.champion.abs_tolerance, rule.champion.rel_tolerance) == ("predictions", 0.1, 0.05)


def test_no_requests_is_refused() -> None:
    assert error("{requests: []}") == (
        f"{KEY}.requests: 0 sample requests; write 1 to 20 JSON bodies, or name a data asset that holds them: "
        "{data: azureml:<name>:<version>}"
    )
    assert error("{status: 200}") == f"{KEY}.requests: it is required; add it"


def test_too_many_requests_is_refused() -> None:
    assert "21 sample requests; write 1 to 20 JSON bodies" in error("{requests: [" + ", ".join(["{}"] * 21) + "]}")


def test_requests_from_a_data_asset_name_its_version_and_how_many_lines() -> None:
    rule = smoke("{requests: {data: azureml:churn-smoke:3, count: 5}, champion: {}}")
    assert rule is not None and isinstance(rule.requests, SmokeData)
    assert (rule.requests.name, rule.requests.version, rule.count) == ("churn-smoke", "3", 5)
    assert smoke("{requests: {data: azureml:churn-smoke:3}}").count == 10  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "asset", ["azureml:churn-smoke@latest", "churn-smoke:3", "azureml:churn-smoke", "azureml:a:b:c"]
)
def test_a_data_asset_without_a_version_says_how_to_write_one(asset: str) -> None:
    assert error(f"{{requests: {{data: '{asset}'}}}}").startswith(
        f"{KEY}.requests.data: {asset!r} does not name a data asset version; write azureml:<name>:<version>, e.g. "
    )


def test_a_data_asset_s_requests_must_fit_a_pass_too() -> None:
    assert error("{requests: {data: azureml:churn-smoke:3, count: 21}}") == (
        f"{KEY}.requests.count: Input should be less than or equal to 20"
    )
    assert error("{requests: {data: azureml:churn-smoke:3, count: 20}, champion: {}}").startswith(
        f"{KEY}: 40 requests of up to 10s each may take longer than 5m"
    )
    assert (
        error("{requests: {data: azureml:churn-smoke:3, file: x}}")
        == f"{KEY}.requests.file: unknown key; remove it or check its spelling"
    )


def test_a_request_too_large_says_so() -> None:
    big = '{"x": "' + "a" * 17000 + '"}'
    assert error(f"{{requests: [{big}]}}") == (
        f"{KEY}.requests: request 0 is 17009 bytes as JSON, more than 16384; use a smaller sample request"
    )


def test_a_bad_schema_says_where_and_how_to_write_one() -> None:
    message = error("{requests: [{}], response_schema: {type: objekt}}")
    assert message.startswith(f"{KEY}.response_schema: not a valid JSON schema at type: ")
    assert message.endswith("write a JSON schema (draft 2020-12) such as {type: object, required: [predictions]}")


def test_a_timeout_out_of_range_says_the_range() -> None:
    assert error("{requests: [{}], timeout: 5m}") == (
        f"{KEY}.timeout: the per-request timeout must be from 1s to 90s, e.g. 10s"
    )


def test_a_smoke_test_longer_than_a_pass_is_refused_with_the_fix() -> None:
    requests = ", ".join(["{}"] * 20)
    assert error(f"{{requests: [{requests}], timeout: 20s, champion: {{}}}}") == (
        f"{KEY}: 40 requests of up to 20s each may take longer than 5m, which one reconciler pass may spend on a "
        "smoke test (the requests an outage may have failed go to the live deployment in what is left); send fewer "
        "requests or set a shorter timeout"
    )


def test_max_wait_defaults_to_an_hour_and_0s_never_waits() -> None:
    default, never = smoke("{requests: [{}]}"), smoke("{requests: [{}], max_wait: 0s}")
    assert default is not None and never is not None
    assert (default.max_wait, never.max_wait) == (timedelta(hours=1), timedelta(0))


@pytest.mark.parametrize("body", ["{requests: [{}], max_wait: 2d}", "{requests: [{}], max_wait: 25h}"])
def test_a_max_wait_over_a_day_is_refused_naming_the_key_and_the_fix(body: str) -> None:
    assert error(body) == (
        f"{KEY}.max_wait: {'2d' if '2d' in body else '25h'} is not a wait for a deferred smoke test; write a "
        "duration from 0s (never wait: a smoke test an outage, a 401 or a 429 defers rolls the candidate back at once) "
        "to 1d, e.g. 1h"
    )


def test_a_max_wait_that_is_not_a_duration_names_the_key() -> None:
    assert error("{requests: [{}], max_wait: soon}").startswith(f"{KEY}.max_wait: ")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("{requests: [{}], status: 700}", "status"),
        ("{requests: [{}], champion: {abs_tolerance: -1}}", "champion.abs_tolerance"),
        ("{requests: [{}], champion: {field: 'a..b'}}", "champion.field"),
        ("{requests: [{}], champion: {tolerance: 1}}", "champion.tolerance"),
        ("{requests: [{}], schema: {}}", "schema"),
    ],
)
def test_bad_values_name_the_key(body: str, where: str) -> None:
    assert error(body).startswith(f"{KEY}.{where}: ")


def test_a_bad_champion_field_says_how_to_write_a_path() -> None:
    assert error("{requests: [{}], champion: {field: 'a..b'}}") == (
        f"{KEY}.champion.field: 'a..b' is not a path into the answer; write key names joined by dots, e.g. "
        "predictions or result.scores (leave it out to compare the whole answer)"
    )


def test_a_synthetic_load_is_bounded_by_what_a_pass_may_spend() -> None:
    rule = smoke("{requests: [{}], load: 30}")
    assert rule is not None and rule.load == 30
    assert error("{requests: [{}], load: 31}") == (
        f"{KEY}: a synthetic load of 31 requests of up to 10s each may take longer than 5m, which one reconciler "
        "pass may spend on it; set a smaller load or a shorter timeout"
    )
    assert error("{requests: [{}], load: -1}").startswith(f"{KEY}.load: ")
