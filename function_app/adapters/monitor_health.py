"""The rollout health check through Azure Monitor Logs (azure-monitor-query): the ``logs`` source.

Online endpoints write one row per request to the Log Analytics table ``AmlOnlineEndpointTrafficLog``
(a diagnostic setting on each online endpoint, category "AmlOnlineEndpointTrafficLog"), with
``EndpointName``, ``DeploymentName``, ``ResponseCode`` (the code returned to the client),
``ModelStatusCode`` (the model container's own code), ``TotalDurationMs`` and ``TimeGenerated``.
:func:`build_query` reads the candidate and the baseline in one query: per deployment and minute
(``bin(TimeGenerated, 1m)``), the requests by ``(ResponseCode, ModelStatusCode)`` and the 95th
percentile of their total duration, and the p95 of the whole window (percentiles do not add up);
the window's histogram is the sum of its minutes'. Asked for the baseline's history too (``before``), the
same query's timespan begins at ``before``, the traffic legs keep the window's rows (``TimeGenerated >=
window_start``) and a fourth leg counts the baseline's rows before the window per minute and code
(``history_requests``): the baseline's reading's ``history``. It does not
decide what a failure is: the policy's ``failure_codes`` count the histogram
(:mod:`handlers.analysis`), so a 424 from a failing model or a 408 timeout is counted however the
policy says, and a 429 apart. The time window is the API's ``timespan``, not the query text; the
caller ends it the source's ingestion lag before now (:func:`handlers.analysis.window`).

The workspace is ``RETRAIN_LOG_ANALYTICS_WORKSPACE_ID``: its Azure resource id
(``/subscriptions/.../workspaces/NAME``, what infra passes; queried with ``query_resource``) or its
Workspace ID, the GUID of its Properties blade (queried with ``query_workspace``). Without it,
:class:`NoHealthData` answers "no data" and says why, and the policy's ``on_no_traffic`` decides.

This module and :mod:`function_app.adapters.monitor_guards` (the query guards) are the ones that import ``azure.monitor.query``, on the first read (never at import),
with the worker's one credential (:func:`function_app.runtime.make_credential`) and the client's own
retries off: the retry budget (:mod:`function_app.retry`) and the error translation
(:mod:`function_app.adapters.azure_errors`) are the Azure ML adapter's.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError

from function_app.adapters import azure_errors
from function_app.adapters.clients import LazyClient, logged_readings, sdk_options
from function_app.retry import RetryPolicy
from handlers.analysis import Reading
from handlers.errors import PermanentError, TransientError
from handlers.keys import finite
from handlers.records import iso

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from function_app.settings import Settings

log = logging.getLogger(__name__)

# Endpoint and deployment names as Azure ML allows them (letters, digits, dashes; a deployment
# name up to 32 characters, an endpoint name 3-32): validated before they go into the query text.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,31}$")
_WORKSPACE_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_WORKSPACE_RESOURCE = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.OperationalInsights/workspaces/[^/]+$",
    re.IGNORECASE,
)

SOURCE = "logs"
QUERY = """let endpoint_name = {endpoint};
let deployment_name = {deployment};{baseline_let}{window_let}
let traffic = AmlOnlineEndpointTrafficLog
| where EndpointName =~ endpoint_name and ({deployments}){window_where};{history_let}
union
    (traffic | summarize requests = count() by DeploymentName, minute = bin(TimeGenerated, 1m), code = toint(ResponseCode), model_code = toint(ModelStatusCode)),
    (traffic | summarize p95_ms = percentile(TotalDurationMs, 95) by DeploymentName, minute = bin(TimeGenerated, 1m)),
    (traffic | summarize p95_ms = percentile(TotalDurationMs, 95) by DeploymentName){history_leg}"""
# With the baseline's minutes before the window (its history, read since ``before``): the query's timespan
# begins at ``before``, the window's rows are those from ``window_start`` on, and the baseline's rows before
# it are counted per minute and code as ``history_requests``.
WINDOW_LET = "\nlet window_start = datetime({start});"
WINDOW_WHERE = "\n| where TimeGenerated >= window_start"
HISTORY_LET = """
let history = AmlOnlineEndpointTrafficLog
| where EndpointName =~ endpoint_name and DeploymentName =~ baseline_name and TimeGenerated < window_start
| summarize history_requests = count() by DeploymentName, minute = bin(TimeGenerated, 1m), code = toint(ResponseCode), model_code = toint(ModelStatusCode);"""
HISTORY_LEG = ",\n    history"


def kql_string(value: str) -> str:
    """``value`` as a KQL string literal: double-quoted, with backslashes and quotes escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def valid_names(*names: tuple[str, str]) -> None:
    """Refuse (PermanentError) each ``(what, name)`` that Azure ML would not accept as an online
    endpoint or deployment name: only such names are quoted into a Log Analytics query."""
    for what, name in names:
        if not _NAME.match(name):
            raise PermanentError(
                f"{what} name {name!r} is not an Azure ML online {what} name (letters, digits and dashes, "
                "starting with a letter, at most 32); it is not put into a Log Analytics query"
            )


def build_query(
    endpoint: str, deployment: str, baseline: str | None = None, window_start: datetime | None = None
) -> str:
    """The query for the candidate ``deployment`` and, if given, the ``baseline`` deployment; with
    ``window_start`` (and a baseline), the baseline's minutes before it too (its history: the query's
    timespan then begins earlier). Names that Azure ML would not accept are refused, not quoted."""
    names = [("endpoint", endpoint), ("deployment", deployment)]
    if baseline is not None:
        names.append(("deployment", baseline))
    valid_names(*names)
    history = baseline is not None and window_start is not None
    start = window_start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if window_start is not None else ""
    return QUERY.format(
        endpoint=kql_string(endpoint),
        deployment=kql_string(deployment),
        baseline_let=f"\nlet baseline_name = {kql_string(baseline)};" if baseline is not None else "",
        window_let=WINDOW_LET.format(start=start) if history else "",
        deployments="DeploymentName =~ deployment_name"
        + (" or DeploymentName =~ baseline_name" if baseline is not None else ""),
        window_where=WINDOW_WHERE if history else "",
        history_let=HISTORY_LET if history else "",
        history_leg=HISTORY_LEG if history else "",
    )


def _minute(value: Any) -> str | None:
    """A row's ``minute`` (the SDK turns a datetime column into a datetime; a string otherwise) as
    an ISO time; None for the rows of the whole window."""
    if isinstance(value, datetime):
        return iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, str) and value:
        try:
            return _minute(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def _code_key(row: dict[str, Any]) -> tuple[int, int | None]:
    """A row's ``(code, model_code)``: a code that is not a number is 0 (unknown), a model code None."""
    code, model = finite(row.get("code")), finite(row.get("model_code"))
    return int(code) if code is not None else 0, int(model) if model is not None else None


NO_WORKSPACE = "no Log Analytics workspace is configured (RETRAIN_LOG_ANALYTICS_WORKSPACE_ID); no data"


class NoHealthData:
    """A health source that is not configured (locally, by default: no Log Analytics workspace, or
    no region for the platform metrics): there is no data; the reading says why, and the policy's
    ``on_no_traffic`` decides."""

    def __init__(self, note: str = "") -> None:
        self.name = "none"
        self.note = note or NO_WORKSPACE

    def read(
        self,
        endpoint: str,
        candidate: str,
        baseline: str | None,
        since: datetime,
        until: datetime,
        before: datetime | None = None,
    ) -> tuple[Reading, Reading | None]:
        def empty(deployment: str) -> Reading:
            return Reading.of(endpoint, deployment, iso(since), iso(until), {}, None, "none", "none", self.note)

        return empty(candidate), (empty(baseline) if baseline is not None else None)


class MonitorHealth:
    """The health of deployments from their endpoint's traffic log in a Log Analytics workspace:
    a :class:`handlers.analysis.HealthSource`."""

    name = "logs"

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
        credential: TokenCredential,
        retry: RetryPolicy | None = None,
        **client_kwargs: Any,
    ) -> MonitorHealth:
        """Nothing is imported or built until the first read."""
        assert settings.log_analytics_workspace_id
        deadline = settings.deadline_seconds

        def build() -> Any:
            from azure.monitor.query import LogsQueryClient  # lazily, on the first read

            return LogsQueryClient(credential, **sdk_options(deadline, **client_kwargs))

        return cls(build, settings.log_analytics_workspace_id, retry or RetryPolicy.from_settings(settings))

    @property
    def client(self) -> Any:
        return self._client.get()

    def read(
        self,
        endpoint: str,
        candidate: str,
        baseline: str | None,
        since: datetime,
        until: datetime,
        before: datetime | None = None,
    ) -> tuple[Reading, Reading | None]:
        """The candidate's and the baseline's traffic over ``since``..``until``, in one query; with
        ``before``, the baseline's minutes from ``before`` to ``since`` too (its reading's ``history``)."""
        history = before is not None and baseline is not None and before < since
        query = build_query(endpoint, candidate, baseline, since if history else None)
        start = before if history and before is not None else since
        names = f"{candidate} and {baseline}" if baseline else candidate
        what = f"querying the traffic log of {endpoint}/{names} in Log Analytics"
        budget = self.retry.budget()

        def run() -> Any:
            if self.workspace.startswith("/"):
                return self.client.query_resource(self.workspace, query, timespan=(start, until))
            return self.client.query_workspace(self.workspace, query, timespan=(start, until))

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
        codes: dict[str, dict[tuple[int, int | None], int]] = {}
        minutes: dict[str, dict[str, dict[tuple[int, int | None], int]]] = {}
        p95: dict[str, float | None] = {}
        p95_minutes: dict[str, dict[str, float | None]] = {}
        earlier: dict[str, dict[tuple[int, int | None], int]] = {}  # the baseline's minutes before the window
        tables = list(getattr(result, "tables", None) or [])
        for table in tables[:1]:
            columns = list(table.columns)
            for raw in table.rows:
                row = dict(zip(columns, list(raw), strict=False))
                name = str(row.get("DeploymentName") or "").lower()
                minute = _minute(row.get("minute"))
                requests = finite(row.get("requests"))
                before_window = finite(row.get("history_requests"))
                if before_window is not None:
                    if minute is not None and name == str(baseline).lower():
                        of_minute = earlier.setdefault(minute, {})
                        key = _code_key(row)
                        of_minute[key] = of_minute.get(key, 0) + int(before_window)
                elif requests is not None:
                    key = _code_key(row)
                    bucket = codes.setdefault(name, {})
                    bucket[key] = bucket.get(key, 0) + int(requests)
                    if minute is not None:
                        of_minute = minutes.setdefault(name, {}).setdefault(minute, {})
                        of_minute[key] = of_minute.get(key, 0) + int(requests)
                elif "p95_ms" in row and minute is not None:
                    p95_minutes.setdefault(name, {})[minute] = finite(row.get("p95_ms"))
                elif "p95_ms" in row:
                    p95[name] = finite(row.get("p95_ms"))

        def reading(deployment: str) -> Reading:
            key = deployment.lower()
            counted, latencies = minutes.get(key, {}), p95_minutes.get(key, {})
            return Reading.of(
                endpoint,
                deployment,
                iso(since),
                iso(until),
                codes.get(key, {}),
                p95.get(key),
                SOURCE,
                query,
                minutes=[(at, counted.get(at, {}), latencies.get(at)) for at in sorted(set(counted) | set(latencies))],
                history=[(at, h, None) for at, h in sorted(earlier.items())] if deployment == baseline else (),
            )

        return logged_readings(
            endpoint, SOURCE, (reading(candidate), reading(baseline) if baseline is not None else None)
        )
