"""An in-process Azure Monitor Logs query API (api.loganalytics.io) for the real ``LogsQueryClient``.

``LogsQueryClient(credential, transport=FakeLogs(...))``: the SDK sends its real request
(``POST /v1/workspaces/{id}/query`` or ``POST /v1/{resourceId}/query``, body ``query`` and
``timespan``) and this handler (a :class:`tests.fake_http.FakeService`) answers in the service's JSON
shape (``tables`` of ``columns`` and ``rows``).

It keeps rows of the ``AmlOnlineEndpointTrafficLog`` table as the table reference describes them:
``EndpointName``, ``DeploymentName``, ``ResponseCode`` (the final code to the client) and
``ModelStatusCode`` (the model's own code; empty when the request never reached the model), both
strings, ``TotalDurationMs`` and ``TimeGenerated``. It accepts one query, the service's, and checks
that it is exactly that text (:data:`QUERY_SHAPE`, names aside); it evaluates it the way Kusto
would: ``=~`` compares case-insensitively, ``toint`` of an empty string is null, ``bin(TimeGenerated,
1m)`` floors to the minute, ``count()`` by ``DeploymentName``, ``minute``, ``code`` and
``model_code``, and the p95 of ``TotalDurationMs`` by ``DeploymentName`` and ``minute``, and by
``DeploymentName`` alone (nearest rank; Kusto estimates it), outer-unioned (a column a leg lacks is
null; a datetime column is an ISO string, which the SDK turns into a datetime). With the baseline's
history, ``let window_start = datetime(...)`` (a Kusto datetime literal) keeps the traffic legs to the
rows from it on, and a fourth leg counts the baseline's rows before it, within the timespan, by the same
keys as ``history_requests`` (a column the union adds after the others). What a failure is is not known
here: the fake answers with what the rows hold. A query it does not recognise, a wrong host, path or
token audience is answered 400 and recorded in ``unexpected``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tests import rbac_model
from tests.fake_http import Answer, FakeService, Refusal, Request, Unexpected, token_audience, token_claims

LOGS_HOST = "api.loganalytics.io"
_LITERAL = r'"((?:[^"\\]|\\.)*)"'
# The service's query, as the fake accepts it: the names are KQL string literals; the rest is fixed.
# With the baseline's history: ``window_start`` (a datetime literal) bounds the traffic, and the baseline's
# rows before it are counted per minute and code in a fourth leg, ``history_requests``.
_COUNTS = r"DeploymentName, minute = bin\(TimeGenerated, 1m\), code = toint\(ResponseCode\), model_code = toint\(ModelStatusCode\)"
QUERY_SHAPE = re.compile(
    rf"""let endpoint_name = {_LITERAL};
let deployment_name = {_LITERAL};(?:
let baseline_name = {_LITERAL};)?(?:
let window_start = datetime\(([0-9T:.Z-]+)\);)?
let traffic = AmlOnlineEndpointTrafficLog
\| where EndpointName =~ endpoint_name and \((DeploymentName =~ deployment_name(?: or DeploymentName =~ baseline_name)?)\)(
\| where TimeGenerated >= window_start)?;(
let history = AmlOnlineEndpointTrafficLog
\| where EndpointName =~ endpoint_name and DeploymentName =~ baseline_name and TimeGenerated < window_start
\| summarize history_requests = count\(\) by {_COUNTS};)?
union
    \(traffic \| summarize requests = count\(\) by {_COUNTS}\),
    \(traffic \| summarize p95_ms = percentile\(TotalDurationMs, 95\) by DeploymentName, minute = bin\(TimeGenerated, 1m\)\),
    \(traffic \| summarize p95_ms = percentile\(TotalDurationMs, 95\) by DeploymentName\)(,
    history)?"""
)

# A rollout guard's query (function_app/adapters/monitor_guards.py): the service's two names, then the
# policy's text, which a test gives the fake with what it answers (:meth:`FakeLogs.guard`).
GUARD_SHAPE = re.compile(rf"""let endpoint_name = {_LITERAL};\nlet deployment_name = {_LITERAL};\n(.*)""", re.DOTALL)
# What querying a workspace, or a workspace-based Application Insights component, takes (Azure RBAC:
# Log Analytics Reader's and Monitoring Reader's ``*/read`` hold both).
QUERY_ACTIONS = {
    "microsoft.operationalinsights/workspaces": "Microsoft.OperationalInsights/workspaces/query/read",
    "microsoft.insights/components": "Microsoft.Insights/components/query/read",
}
# The Log Analytics API's refusal of a caller without that permission (Azure Monitor docs, "Log Analytics
# API errors"; the SDKs' troubleshooting guides): 403 InsufficientAccessError.
INSUFFICIENT_ACCESS = "The provided credentials have insufficient access to perform the requested operation"
Rows = list[dict[str, Any]]
GuardAnswer = Callable[[str, str, datetime, datetime], Rows]


@dataclass
class TrafficRow:
    """One row of AmlOnlineEndpointTrafficLog; the codes are strings, as in the table."""

    time: datetime
    endpoint: str
    deployment: str
    response_code: str
    model_status_code: str
    duration_ms: int


def stamp(moment: datetime) -> str:
    """A datetime as Log Analytics writes one in a result: ISO 8601, UTC, with a Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def toint(value: str) -> int | None:
    """Kusto's ``toint`` of a string: the number, or null when it is not one."""
    try:
        return int(value.strip())
    except ValueError:
        return None


class FakeLogs(FakeService):
    """``workspace``: the Workspace ID (GUID) or the workspace's resource id the service must query;
    ``rows`` the table's; ``partial``: the query answers with a partial error beside its tables."""

    unexpected_code = "BadArgumentError"

    def __init__(self, workspace: str, *, principal: rbac_model.Principal | None = None) -> None:
        super().__init__()
        self.workspace = workspace
        self.rows: list[TrafficRow] = []
        self.calls: list[Request] = []
        self.partial = False
        # Who may query: checked when given, at the resource each address stands for.
        self.principal = principal
        self.addresses: dict[str, str] = {workspace.lower(): workspace}  # GUID or resource id -> resource id
        self.guards: dict[str, GuardAnswer] = {}

    def add_workspace(self, address: str, resource_id: str | None = None) -> None:
        """Another workspace (or Application Insights component) the fake answers for: ``address`` its
        resource id, or its Workspace ID with ``resource_id`` the resource it is."""
        self.addresses[address.lower()] = resource_id or address

    def guard(self, query: str, answer: GuardAnswer) -> None:
        """The policy's guard ``query`` text is known: ``answer(endpoint, deployment, start, end)`` gives its
        rows, as Kusto would evaluate that query over the fake's data."""
        self.guards[query] = answer

    def serve(
        self,
        when: datetime,
        endpoint: str,
        deployment: str,
        *,
        ok: int,
        errors: int = 0,
        model_errors: int = 0,
        timeouts: int = 0,
        throttled: int = 0,
        ms: int = 40,
    ) -> None:
        """Requests at ``when``, taking ``ms`` each: ``ok`` answered 200 by the model; ``errors`` 503
        from the platform (the model never answered); ``model_errors`` 424 because the model answered
        500; ``timeouts`` 408; ``throttled`` 429 (the model never called)."""
        kinds = [("200", "200")] * ok + [("503", "")] * errors + [("424", "500")] * model_errors
        kinds += [("408", "")] * timeouts + [("429", "")] * throttled
        self.rows.extend(TrafficRow(when, endpoint, deployment, code, model, ms) for code, model in kinds)

    def fault_code(self, status: int) -> str:
        return "ServiceUnavailable" if status >= 500 else "Forbidden"

    def check(self, call: Request) -> None:
        if call.host != LOGS_HOST:
            raise Unexpected(f"host {call.host}")
        if token_audience(call.authorization) != f"https://{LOGS_HOST}":
            raise Unexpected("no bearer token for https://api.loganalytics.io")
        address = call.path.removeprefix("/v1").removesuffix("/query")
        address = address.removeprefix("/workspaces/") if not address.startswith("/subscriptions/") else address
        resource = self.addresses.get(address.lower())
        if resource is None:
            raise Unexpected(f"path {call.path}, expected one of {sorted(self.addresses)}")
        if self.principal is not None and resource.startswith("/"):
            kind = "/".join(resource.lower().split("/providers/")[1].split("/")[:2])
            action = QUERY_ACTIONS[kind]
            caller = token_claims(call.authorization).get("oid")
            if caller != self.principal.oid or not self.principal.allows(action, resource):
                raise Refusal(403, "InsufficientAccessError", INSUFFICIENT_ACCESS)

    def handle(self, call: Request) -> Answer:
        call.body = call.body or {}
        query = str(call.body.get("query") or "")
        match = QUERY_SHAPE.fullmatch(query)
        if match is None:
            return self._guard(call, query)
        endpoint, candidate, baseline = (json.loads(f'"{g}"') if g is not None else None for g in match.groups()[:3])
        window_text, deployments, *history = match.groups()[3:]
        if (baseline is None) != (" or " not in deployments):
            raise Unexpected("baseline_name is declared but not used, or used but not declared")
        if len({window_text is None, *(h is None for h in history)}) > 1 or (window_text and baseline is None):
            raise Unexpected("window_start, its where, the history and its leg come together, with a baseline")
        wanted = {candidate.lower()} | ({baseline.lower()} if baseline else set())
        start_text, _, end_text = str(call.body.get("timespan") or "").partition("/")
        start, end = datetime.fromisoformat(start_text), datetime.fromisoformat(end_text)
        window = datetime.fromisoformat(window_text) if window_text else start  # a Kusto datetime literal
        matching = [
            r
            for r in self.rows
            if r.endpoint.lower() == endpoint.lower() and r.deployment.lower() in wanted and start <= r.time < end
        ]
        rows = [r for r in matching if r.time >= window]
        earlier: dict[tuple[str, datetime, int | None, int | None], int] = {}
        for r in matching:
            if r.time < window and baseline is not None and r.deployment.lower() == baseline.lower():
                key = (
                    r.deployment,
                    r.time.replace(second=0, microsecond=0),
                    toint(r.response_code),
                    toint(r.model_status_code),
                )
                earlier[key] = earlier.get(key, 0) + 1
        groups: dict[tuple[str, datetime, int | None, int | None], int] = {}
        durations: dict[tuple[str, datetime | None], list[int]] = {}
        for r in rows:
            minute = r.time.replace(second=0, microsecond=0)  # bin(TimeGenerated, 1m)
            key = (r.deployment, minute, toint(r.response_code), toint(r.model_status_code))
            groups[key] = groups.get(key, 0) + 1
            durations.setdefault((r.deployment, minute), []).append(r.duration_ms)
            durations.setdefault((r.deployment, None), []).append(r.duration_ms)
        # the union's columns in the order the legs bring them (Kusto's outer union), history_requests last
        extra = [None] if window_text else []
        histogram = [[d, stamp(m), code, model, n, None, *extra] for (d, m, code, model), n in groups.items()]
        percentiles = []
        for (d, m), values in durations.items():
            values.sort()
            p95 = float(values[max(0, math.ceil(0.95 * len(values)) - 1)])
            percentiles.append([d, stamp(m) if m is not None else None, None, None, None, p95, *extra])
        before = [[d, stamp(m), code, model, None, None, n] for (d, m, code, model), n in earlier.items()]
        columns = [
            {"name": "DeploymentName", "type": "string"},
            {"name": "minute", "type": "datetime"},
            {"name": "code", "type": "int"},
            {"name": "model_code", "type": "int"},
            {"name": "requests", "type": "long"},
            {"name": "p95_ms", "type": "real"},
        ]
        if window_text:
            columns.append({"name": "history_requests", "type": "long"})
        table = {"name": "PrimaryResult", "columns": columns, "rows": histogram + percentiles + before}
        out: dict[str, Any] = {"tables": [table]}
        if self.partial:
            out["error"] = {"code": "PartialError", "message": "There were some errors when processing your query."}
        return 200, {}, out

    def _guard(self, call: Request, query: str) -> Answer:
        """A guard's query: the service's names decoded as Kusto reads the literals, the test's answer."""
        match = GUARD_SHAPE.fullmatch(query)
        if match is None or match.group(3) not in self.guards:
            raise Unexpected("a query the fake does not know")
        endpoint, deployment = (json.loads(f'"{g}"') for g in match.groups()[:2])
        start_text, _, end_text = str(call.body.get("timespan") or "").partition("/")
        rows = self.guards[match.group(3)](
            endpoint, deployment, datetime.fromisoformat(start_text), datetime.fromisoformat(end_text)
        )
        names = list(rows[0]) if rows else ["value"]

        def kind(name: str) -> str:
            values = [r[name] for r in rows if r.get(name) is not None]
            if all(isinstance(v, int) and not isinstance(v, bool) for v in values) and values:
                return "long"
            return "string" if any(isinstance(v, str) for v in values) else "real"

        table = {
            "name": "PrimaryResult",
            "columns": [{"name": n, "type": kind(n)} for n in names],
            "rows": [[r.get(n) for n in names] for r in rows],
        }
        return 200, {}, {"tables": [table]}
