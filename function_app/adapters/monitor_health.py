"""The rollout health check through Azure Monitor Logs (azure-monitor-query).

Online endpoints write one row per request to the Log Analytics table ``AmlOnlineEndpointTrafficLog``
(a diagnostic setting on each online endpoint, category "AmlOnlineEndpointTrafficLog"), with
``EndpointName``, ``DeploymentName``, ``ResponseCode`` (the code returned to the client),
``TotalDurationMs`` and ``TimeGenerated``. :data:`QUERY` counts a deployment's requests and 5xx
answers and takes the 95th percentile of their total duration; the time window is the API's
``timespan``, not the query text.

The workspace is ``RETRAIN_LOG_ANALYTICS_WORKSPACE_ID``: its Azure resource id
(``/subscriptions/.../workspaces/NAME``, what infra passes; queried with ``query_resource``) or its
Workspace ID, the GUID of its Properties blade (queried with ``query_workspace``). Without it,
:class:`NoHealthData` answers "no data" and says why, and the policy's ``on_no_traffic`` decides.

This is the only module that imports ``azure.monitor.query``, on the first check (never at import),
with ``DefaultAzureCredential(managed_identity_client_id=AZURE_CLIENT_ID)`` and the client's own
retries off: the retry budget (:mod:`function_app.retry`) and the error translation
(:mod:`function_app.adapters.azure_errors`) are the Azure ML adapter's.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError

from function_app.adapters import azure_errors
from function_app.adapters.clients import LazyClient, sdk_options
from function_app.retry import RetryPolicy
from handlers.errors import PermanentError, TransientError
from handlers.ports import HealthReading
from handlers.records import iso

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from function_app.settings import Settings

log = logging.getLogger(__name__)

QUERY_NAME = "aml_online_endpoint_traffic"
# Endpoint and deployment names as Azure ML allows them (letters, digits, dashes; a deployment
# name up to 32 characters, an endpoint name 3-32): validated before they go into the query text.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,31}$")
_WORKSPACE_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_WORKSPACE_RESOURCE = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.OperationalInsights/workspaces/[^/]+$",
    re.IGNORECASE,
)

QUERY = """let endpoint_name = {endpoint};
let deployment_name = {deployment};
AmlOnlineEndpointTrafficLog
| where EndpointName =~ endpoint_name and DeploymentName =~ deployment_name
| extend code = toint(ResponseCode)
| summarize requests = count(), errors = countif(code >= 500), p95_ms = percentile(TotalDurationMs, 95)"""


def kql_string(value: str) -> str:
    """``value`` as a KQL string literal: double-quoted, with backslashes and quotes escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def build_query(endpoint: str, deployment: str) -> str:
    """The query for one deployment. Names that Azure ML would not accept are refused, not quoted."""
    for what, name in (("endpoint", endpoint), ("deployment", deployment)):
        if not _NAME.match(name):
            raise PermanentError(
                f"{what} name {name!r} is not an Azure ML online {what} name (letters, digits and dashes, "
                "starting with a letter, at most 32); it is not put into a Log Analytics query"
            )
    return QUERY.format(endpoint=kql_string(endpoint), deployment=kql_string(deployment))


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class NoHealthData:
    """The local and dry-run health check: no Log Analytics workspace is configured, so there is
    no data; the reading says so, and the policy's ``on_no_traffic`` decides."""

    name = "none"

    def check(self, endpoint: str, deployment: str, since: datetime, until: datetime) -> HealthReading:
        return HealthReading(
            endpoint,
            deployment,
            iso(since),
            iso(until),
            0,
            0,
            None,
            "none",
            QUERY_NAME,
            "no Log Analytics workspace is configured (RETRAIN_LOG_ANALYTICS_WORKSPACE_ID); no data",
        )


class MonitorHealth:
    """The health of a deployment from its endpoint's traffic log in a Log Analytics workspace."""

    name = "log-analytics"

    def __init__(self, client: Any, workspace: str, retry: RetryPolicy) -> None:
        """``client``: a ``LogsQueryClient``, or a function that builds one on first use (once per worker)."""
        if not (_WORKSPACE_GUID.match(workspace) or _WORKSPACE_RESOURCE.match(workspace)):
            raise ValueError(
                f"RETRAIN_LOG_ANALYTICS_WORKSPACE_ID={workspace!r}: give the Log Analytics workspace's resource id "
                "(/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.OperationalInsights/workspaces/NAME) "
                "or its Workspace ID (a GUID)"
            )
        self._client = LazyClient(client)
        self.workspace = workspace
        self.retry = retry

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        credential: TokenCredential | None = None,
        retry: RetryPolicy | None = None,
        **client_kwargs: Any,
    ) -> MonitorHealth:
        """Nothing is imported or built until the first check."""
        assert settings.log_analytics_workspace_id
        deadline = settings.deadline_seconds

        def build() -> Any:
            from azure.identity import DefaultAzureCredential
            from azure.monitor.query import LogsQueryClient  # lazily, on the first check

            cred = credential or DefaultAzureCredential(managed_identity_client_id=settings.client_id)
            return LogsQueryClient(cred, **sdk_options(deadline, **client_kwargs))

        return cls(build, settings.log_analytics_workspace_id, retry or RetryPolicy.from_settings(settings))

    @property
    def client(self) -> Any:
        return self._client.get()

    def check(self, endpoint: str, deployment: str, since: datetime, until: datetime) -> HealthReading:
        query = build_query(endpoint, deployment)
        what = f"querying the traffic log of {endpoint}/{deployment} in Log Analytics"
        budget = self.retry.budget()

        def run() -> Any:
            if self.workspace.startswith("/"):
                return self.client.query_resource(self.workspace, query, timespan=(since, until))
            return self.client.query_workspace(self.workspace, query, timespan=(since, until))

        try:
            result = budget.call(what, run)
        except AzureError as exc:
            if azure_errors.status_of(exc) in (401, 403):
                raise PermanentError(
                    f"{what}: Log Analytics refused access ({azure_errors.describe(exc)}); grant the function app's "
                    f"managed identity Log Analytics Reader on {self.workspace} (infra/modules/log-analytics-reader.bicep)"
                ) from exc
            raise azure_errors.translate(exc, what) from exc
        status = str(getattr(getattr(result, "status", None), "value", getattr(result, "status", "")))
        if status != "Success":  # a partial result: the numbers may be short; ask again next pass
            error = getattr(result, "partial_error", None)
            raise TransientError(f"{what}: partial result ({getattr(error, 'message', error)}); will ask again")
        requests, errors, p95 = 0, 0, None
        tables = list(getattr(result, "tables", None) or [])
        rows = list(tables[0].rows) if tables else []
        if rows:
            columns = list(tables[0].columns)
            row = dict(zip(columns, list(rows[0]), strict=False))
            requests = int(_number(row.get("requests")) or 0)
            errors = int(_number(row.get("errors")) or 0)
            p95 = _number(row.get("p95_ms")) if requests else None
        log.info(
            "health %s/%s %s..%s: %d request(s), %d 5xx, p95 %s ms",
            endpoint,
            deployment,
            iso(since),
            iso(until),
            requests,
            errors,
            p95,
        )
        return HealthReading(endpoint, deployment, iso(since), iso(until), requests, errors, p95, self.name, QUERY_NAME)
