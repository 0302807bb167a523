"""The policy's ``deploy.rollout.health`` keys: defaults, the new keys, and errors that say the fix."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from handlers.errors import PolicyError
from handlers.policy_file import parse_policy
from handlers.rollout_rules import HealthRule


def health(**keys: Any) -> HealthRule:
    body = ", ".join(f"{k}: {v}" for k, v in keys.items())
    policy = parse_policy(
        f"""
models:
  churn:
    deploy:
      endpoint: churn-endpoint
      rollout:
        health: {{{body}}}
"""
    )
    deploy = policy.models["churn"].deploy
    assert deploy is not None
    return deploy.rollout.health


def error(**keys: Any) -> str:
    with pytest.raises(PolicyError) as raised:
        health(**keys)
    [message] = raised.value.problems
    return message


def test_the_defaults_count_what_users_feel_and_read_platform_metrics() -> None:
    rule = health()
    assert rule.source is None and rule.source_or() == "metrics" and rule.source_or("logs") == "logs"
    assert rule.failure_codes == ("5xx", "408", "424", "model_5xx")
    assert (rule.confidence, rule.max_latency_ratio, rule.max_throttle_rate) == (0.99, 1.5, None)
    assert rule.lag_for("metrics") == timedelta(minutes=3) and rule.lag is None
    assert (rule.max_error_rate, rule.min_requests, rule.on_no_traffic) == (0.05, 20, "rollback")


def test_the_existing_keys_keep_working_beside_the_new_ones() -> None:
    rule = health(max_error_rate=0.02, min_requests=50, max_latency_ms=300, max_bake="20m", on_no_traffic="hold")
    assert (rule.max_error_rate, rule.min_requests, rule.max_latency_ms) == (0.02, 50, 300)
    assert rule.max_bake == timedelta(minutes=20) and rule.on_no_traffic == "hold"


def test_the_policy_s_source_wins_over_the_setting_and_lag_overrides_the_source_s() -> None:
    assert health(source="logs").source_or("metrics") == "logs"
    assert health().lag_for("logs") == timedelta(minutes=5)
    assert health(source="logs", lag="90s").lag_for("logs") == timedelta(seconds=90)


def test_failure_codes_take_classes_and_codes_and_drop_repeats() -> None:
    assert health(failure_codes="[5xx, 404, '424', 5XX, model_5xx]").failure_codes == ("5xx", "404", "424", "model_5xx")
    assert health(failure_codes="4xx").failure_codes == ("4xx",)


def test_429_is_refused_as_a_failure_code_with_the_key_to_use() -> None:
    assert error(failure_codes="[5xx, 429]") == (
        "policy.yaml: models.churn.deploy.rollout.health.failure_codes: 429 is throttling, judged by "
        "max_throttle_rate, not a failure; remove it"
    )


def test_an_unknown_failure_code_says_what_to_write() -> None:
    message = error(failure_codes="[6xx]")
    assert message.startswith("policy.yaml: models.churn.deploy.rollout.health.failure_codes: '6xx' is not a failure")
    assert "write '5xx', '4xx', 'model_5xx' or a status code from 400 to 599 such as 408" in message
    assert "leave the key out for the default" in error(failure_codes="[]")


@pytest.mark.parametrize(
    ("keys", "path"),
    [
        ({"source": "appinsights"}, "health.source"),
        ({"confidence": 1}, "health.confidence"),
        ({"confidence": 0.2}, "health.confidence"),
        ({"max_latency_ratio": 0.5}, "health.max_latency_ratio"),
        ({"max_throttle_rate": 2}, "health.max_throttle_rate"),
        ({"lag": "soon"}, "health.lag"),
    ],
)
def test_bad_values_name_the_key(keys: dict[str, Any], path: str) -> None:
    assert error(**keys).startswith(f"policy.yaml: models.churn.deploy.rollout.{path}: ")


def test_the_lag_error_says_how_to_write_a_duration() -> None:
    assert "write it like '6h', '30m', '1d12h' or '45s'" in error(lag="soon")


def test_the_baseline_s_history_is_an_hour_by_default_and_at_most_a_day() -> None:
    assert health().history == timedelta(hours=1) and health(history="0m").history == timedelta(0)
    assert health(history="6h").history == timedelta(hours=6)
    assert error(history="2d") == (
        "policy.yaml: models.churn.deploy.rollout.health.history: 2d is not a history the judge reads; "
        "write a duration from 0m (none: the baseline's minutes in the rollout only) to 24h, e.g. 1h"
    )
    assert "write it like '6h'" in error(history="an hour")
