"""The rollout guards of the policy (``deploy.rollout.guards``): what, besides the health check,
rolls a rollout in flight back. Not to be confused with :mod:`handlers.guards`, the *slot* guards
(cooldown, daily budget, single flight) that decide whether new work may start.

- ``alerts``: Azure Monitor alert rules tied to the model. A *fired* alert of one of them, posted to
  ``/api/alerts`` while the model has a rollout in flight, rolls it back through the operator's path
  (:mod:`handlers.rollout.watch`); ``alert_targets``: resource ids besides the service's workspace
  (and what is in it) whose alerts count, as ``models.<m>.alert_targets`` for retraining alerts.
- ``queries``: custom KQL guards over a Log Analytics workspace (or a workspace-based Application
  Insights component), one number per deployment, judged at each look of a step
  (:mod:`handlers.rollout.query_guards`).

See docs/rollouts.md ("Guards") and docs/policy.md.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from handlers.policy_base import Strict

# The names the service declares in front of a guard's query (``let deployment_name = "...";``):
# the query uses them, never declares them.
DEPLOYMENT_NAME = "deployment_name"
ENDPOINT_NAME = "endpoint_name"
_GUARD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_RESOURCE_ID = re.compile(r"^/subscriptions/[^/\s]+/resourceGroups/[^/\s]+/providers/[^\s]+$", re.IGNORECASE)
_WORKSPACE_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_QUERYABLE = re.compile(
    r"^/subscriptions/[^/\s]+/resourceGroups/[^/\s]+/providers/"
    r"(Microsoft\.OperationalInsights/workspaces|Microsoft\.Insights/components)/[^/\s]+$",
    re.IGNORECASE,
)
_DECLARES = re.compile(rf"\blet\s+({DEPLOYMENT_NAME}|{ENDPOINT_NAME})\b", re.IGNORECASE)
MAX_QUERY = 10_000  # characters of a guard's query text


class VersusBaseline(Strict):
    """The candidate's value compared with the baseline's over the same window: it breaches when it
    is worse by more than ``margin`` of the baseline's value (``0.1``: 10%); worse is lower when
    ``higher_is_better`` (the default), higher otherwise."""

    margin: float = Field(description="relative: 0.1 allows the candidate 10% worse than the baseline")
    higher_is_better: bool = True

    @field_validator("margin")
    @classmethod
    def _relative(cls, margin: float) -> float:
        if not 0 <= margin <= 10:
            raise ValueError(
                f"margin {margin} is not a share of the baseline's value; write e.g. 0.1 for 'at most 10% worse' "
                "(0 to 10)"
            )
        return margin


class QueryGuard(Strict):
    """One custom query guard: ``query`` (KQL) run once per deployment, in front of which the service
    declares ``deployment_name`` and ``endpoint_name`` as KQL string literals; it returns one row whose
    column ``value`` (or its only column) is the number. Judged by ``min``/``max`` (absolute) and/or
    ``baseline`` (relative to the baseline deployment's value)."""

    query: str = Field(min_length=1, max_length=MAX_QUERY)
    workspace: str | None = Field(
        default=None,
        description="Log Analytics workspace (resource id or Workspace ID GUID) or workspace-based Application "
        "Insights component (resource id); default RETRAIN_LOG_ANALYTICS_WORKSPACE_ID",
    )
    min: float | None = None
    max: float | None = None
    baseline: VersusBaseline | None = None

    @field_validator("query")
    @classmethod
    def _uses_the_deployment(cls, query: str) -> str:
        declared = _DECLARES.search(query)
        if declared:
            raise ValueError(
                f"the query declares {declared.group(1)!r}; the service declares it (the deployment being judged, as a "
                f"KQL string literal): remove the 'let {declared.group(1)} = ...' statement and use the name as it is"
            )
        if not re.search(rf"\b{DEPLOYMENT_NAME}\b", query):
            raise ValueError(
                f"the query never uses {DEPLOYMENT_NAME!r}, so it would read the same number for every deployment; "
                f"filter on it, e.g. '| where tostring(Properties.deployment) == {DEPLOYMENT_NAME}'"
            )
        return query

    @field_validator("workspace")
    @classmethod
    def _queryable(cls, value: str | None) -> str | None:
        if value is not None and not (_WORKSPACE_GUID.match(value) or _QUERYABLE.match(value)):
            raise ValueError(
                f"{value!r} is not a Log Analytics workspace or Application Insights component; give its resource id "
                "(/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.OperationalInsights/workspaces/NAME or "
                ".../Microsoft.Insights/components/NAME) or a workspace's Workspace ID (a GUID)"
            )
        return value

    @model_validator(mode="after")
    def _judged(self) -> QueryGuard:
        if self.min is None and self.max is None and self.baseline is None:
            raise ValueError(
                "a query guard needs a limit: 'min', 'max' (absolute) or 'baseline: {margin: 0.1}' (relative to the "
                "baseline deployment's value)"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}; swap them")
        return self


class GuardsRule(Strict):
    """``alerts``: alert rule names that roll a rollout in flight back when they fire;
    ``alert_targets``: resource ids besides the workspace whose alerts count; ``queries``: custom
    query guards by name."""

    alerts: list[Annotated[str, Field(min_length=1, max_length=260)]] = Field(default_factory=list)
    alert_targets: list[str] = Field(default_factory=list)
    queries: dict[str, QueryGuard] = Field(default_factory=dict)

    @field_validator("alert_targets")
    @classmethod
    def _resource_ids(cls, targets: list[str]) -> list[str]:
        for target in targets:
            if not _RESOURCE_ID.match(target.strip()):
                raise ValueError(
                    f"{target!r} is not an Azure resource id; write the alert's target resource as "
                    "'/subscriptions/SUB/resourceGroups/RG/providers/PROVIDER/TYPE/NAME' (alertTargetIDs in the alert)"
                )
        return targets

    @field_validator("queries")
    @classmethod
    def _names(cls, queries: dict[str, QueryGuard]) -> dict[str, QueryGuard]:
        for name in queries:
            if not _GUARD_NAME.match(name):
                raise ValueError(
                    f"{name!r} is not a guard name; use a letter, then letters, digits, '-' and '_' (at most 63)"
                )
        return queries
