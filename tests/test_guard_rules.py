"""The rollout guards' policy keys (``deploy.rollout.guards``): each is validated, and each error
names the key and the fix."""

from __future__ import annotations

import pytest

from handlers.errors import PolicyError
from handlers.policy_file import parse_policy

WORKSPACE = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/log-shop"
QUERY = "AppRequests | where tostring(Properties.deployment) == deployment_name | summarize value = avg(ItemCount)"


def policy(guards: str) -> str:
    body = "\n".join("          " + line for line in guards.strip("\n").splitlines())
    return f"""
models:
  churn:
    deploy:
      endpoint: churn-endpoint
      rollout:
        guards:
{body}
"""


def problems(guards: str) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(policy(guards))
    return str(info.value)


def test_guards_default_to_none() -> None:
    rule = parse_policy(policy("alerts: []")).models["churn"].deploy
    assert rule is not None and rule.rollout.guards.queries == {} and rule.rollout.guards.alerts == []


def test_a_full_guards_section_is_read() -> None:
    text = f"""
alerts: [Churn-Endpoint-5xx, churn-latency]
alert_targets: ["{WORKSPACE}"]
queries:
  conversion:
    query: "{QUERY}"
    workspace: "{WORKSPACE}"
    min: 0.01
    baseline: {{margin: 0.1}}
  refunds:
    query: "{QUERY}"
    max: 5
    baseline: {{margin: 0.2, higher_is_better: false}}
"""
    guards = parse_policy(policy(text)).models["churn"].deploy.rollout.guards  # type: ignore[union-attr]
    assert guards.alerts == ["Churn-Endpoint-5xx", "churn-latency"]
    conversion, refunds = guards.queries["conversion"], guards.queries["refunds"]
    assert conversion.min == 0.01 and conversion.baseline is not None and conversion.baseline.higher_is_better
    assert refunds.workspace is None and refunds.baseline is not None and not refunds.baseline.higher_is_better


@pytest.mark.parametrize(
    ("guards", "key", "fix"),
    [
        ("queries:\n  c:\n    query: 'T | count'\n    min: 1", "queries.c.query", "filter on it"),
        (
            f"queries:\n  c:\n    query: 'let deployment_name = \"blue\"; {QUERY}'\n    min: 1",
            "queries.c.query",
            "the service declares it",
        ),
        (f"queries:\n  c:\n    query: '{QUERY}'", "queries.c", "needs a limit"),
        (f"queries:\n  c:\n    query: '{QUERY}'\n    min: 3\n    max: 1", "queries.c", "swap them"),
        (f"queries:\n  c:\n    query: '{QUERY}'\n    minimum: 3", "queries.c.minimum", "unknown key"),
        (
            f"queries:\n  c:\n    query: '{QUERY}'\n    baseline: {{margin: -1}}",
            "queries.c.baseline.margin",
            "0.1 for 'at most 10% worse'",
        ),
        (
            f"queries:\n  c:\n    query: '{QUERY}'\n    min: 1\n    workspace: log-shop",
            "queries.c.workspace",
            "Workspace ID (a GUID)",
        ),
        (f"queries:\n  'bad name':\n    query: '{QUERY}'\n    min: 1", "guards.queries", "not a guard name"),
        ("alert_targets: [churn-endpoint]", "guards.alert_targets", "not an Azure resource id"),
        ("alerts: ['']", "guards.alerts.0", "at least 1 character"),
        ("alert: [x]", "guards.alert", "unknown key"),
    ],
)
def test_each_bad_guard_key_is_named_with_the_fix(guards: str, key: str, fix: str) -> None:
    said = problems(guards)
    assert f"deploy.rollout.guards.{key}".replace("guards.guards.", "guards.") in said, said
    assert fix in said, said


def test_an_application_insights_component_or_a_workspace_guid_is_accepted() -> None:
    component = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Insights/components/appi-shop"
    for where in (component, "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"):
        rule = parse_policy(policy(f"queries:\n  c:\n    query: '{QUERY}'\n    max: 1\n    workspace: '{where}'"))
        assert rule.models["churn"].deploy.rollout.guards.queries["c"].workspace == where  # type: ignore[union-attr]
