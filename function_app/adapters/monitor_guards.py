"""The rollouts' query guards through Azure Monitor Logs (azure-monitor-query): a
:class:`handlers.rollout.query_guards.GuardQueries`.

A guard's query (``deploy.rollout.guards.queries.NAME.query``) comes only from the policy. The service
puts two ``let`` statements in front of it, the endpoint's and the deployment's names checked against
Azure ML's naming rules and quoted as KQL string literals (:func:`guard_query`), so no name can change
what the query does; the window is the API's ``timespan``. It is sent to the guard's ``workspace``, else
``RETRAIN_LOG_ANALYTICS_WORKSPACE_ID``: a Log Analytics workspace by resource id (``query_resource``) or
Workspace ID (``query_workspace``), or a workspace-based Application Insights component by resource id
(``query_resource``: its tables are ``requests``, ``customEvents``, ... as in its Logs blade).

The answer is one row: its column ``value``, or its only column, is the number; no row, a null or a
value that is not a number is "nothing" (the guard is unverified). A refusal (401/403) names the role
(Log Analytics Reader on that workspace or component), a 400 is Azure's own message about the query.
This module and :mod:`function_app.adapters.monitor_health` are the two that import ``azure.monitor.query``,
on the first read, with the worker's one credential and its retry budget.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError

from function_app.adapters import azure_errors
from function_app.adapters.clients import LazyClient, sdk_options
from function_app.adapters.monitor_health import kql_string, valid_names
from function_app.retry import RetryPolicy
from handlers.errors import PermanentError, TransientError
from handlers.guard_rules import DEPLOYMENT_NAME, ENDPOINT_NAME
from handlers.keys import finite
from handlers.rollout.query_guards import GuardReading

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from function_app.settings import Settings
    from handlers.guard_rules import QueryGuard

log = logging.getLogger(__name__)


def guard_query(query: str, endpoint: str, deployment: str) -> str:
    """The query sent for ``deployment``: the policy's text after the service's ``let`` statements."""
    valid_names(("endpoint", endpoint), ("deployment", deployment))
    return f"let {ENDPOINT_NAME} = {kql_string(endpoint)};\nlet {DEPLOYMENT_NAME} = {kql_string(deployment)};\n{query}"


class MonitorGuards:
    """Query guards read from Log Analytics / Application Insights (``default_workspace``: the
    setting's, "" when none)."""

    def __init__(self, client: Any, default_workspace: str, retry: RetryPolicy) -> None:
        """``client``: a ``LogsQueryClient``, or a function that builds one on first use (once per worker)."""
        self._client = LazyClient(client)
        self.default_workspace = default_workspace
        self.retry = retry

    @classmethod
    def from_settings(
        cls, settings: Settings, *, credential: TokenCredential, retry: RetryPolicy | None = None, **client_kwargs: Any
    ) -> MonitorGuards:
        """Nothing is imported or built until the first read."""
        deadline = settings.deadline_seconds

        def build() -> Any:
            from azure.monitor.query import LogsQueryClient  # lazily, on the first read

            return LogsQueryClient(credential, **sdk_options(deadline, **client_kwargs))

        return cls(build, settings.log_analytics_workspace_id or "", retry or RetryPolicy.from_settings(settings))

    def value(
        self, name: str, guard: QueryGuard, endpoint: str, deployment: str, since: datetime, until: datetime
    ) -> GuardReading:
        workspace = guard.workspace or self.default_workspace
        if not workspace:
            raise PermanentError(
                f"guard {name} names no workspace and RETRAIN_LOG_ANALYTICS_WORKSPACE_ID is empty; set one of them"
            )
        query = guard_query(guard.query, endpoint, deployment)
        what = f"querying {workspace}"
        budget = self.retry.budget()
        client = self._client.get()

        def run() -> Any:
            if workspace.startswith("/"):
                return client.query_resource(workspace, query, timespan=(since, until))
            return client.query_workspace(workspace, query, timespan=(since, until))

        try:
            result = budget.call(what, run)
        except AzureError as exc:
            status = azure_errors.status_of(exc)
            if status in (401, 403):
                raise PermanentError(
                    f"{what}: refused ({azure_errors.describe(exc)}); grant the function app's managed identity Log "
                    f"Analytics Reader on {workspace}"
                ) from exc
            if status == 400:
                raise PermanentError(f"{what}: the query was refused ({azure_errors.describe(exc)}); fix it") from exc
            raise azure_errors.translate(exc, what) from exc
        state = str(getattr(getattr(result, "status", None), "value", getattr(result, "status", "")))
        if state != "Success":
            error = getattr(result, "partial_error", None)
            raise TransientError(f"{what}: partial result ({getattr(error, 'message', error)})")
        tables = list(getattr(result, "tables", None) or [])
        rows = list(tables[0].rows) if tables else []
        if len(rows) > 1:
            raise PermanentError(f"{what}: the query returned {len(rows)} rows; end it with one summarize, one row")
        value = None
        if rows:
            columns = list(tables[0].columns)
            row = dict(zip(columns, list(rows[0]), strict=False))
            raw = row.get("value") if "value" in row else (row[columns[0]] if len(columns) == 1 else None)
            if raw is None and "value" not in row and len(columns) != 1:
                raise PermanentError(f"{what}: the row has columns {columns}; name the number 'value'")
            value = finite(raw)
        log.info("guard %s %s/%s: %s", name, endpoint, deployment, value)
        return GuardReading(name, deployment, value, query, workspace)
