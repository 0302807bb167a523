"""An in-process Azure Monitor Logs query API (api.loganalytics.io) for the real ``LogsQueryClient``.

``LogsQueryClient(credential, transport=FakeLogs(...))``: the SDK sends its real request
(``POST /v1/workspaces/{id}/query`` or ``POST /v1/{resourceId}/query``, body ``query`` and
``timespan``) and this transport answers in the service's JSON shape (``tables`` of ``columns`` and
``rows``), through the same ``requests``/``urllib3`` response objects the real transport reads (see
:mod:`tests.fake_arm`). It keeps the rows of an ``AmlOnlineEndpointTrafficLog`` table and evaluates
the one query the service sends: it reads the endpoint and deployment names from the query's
``let`` statements (KQL string literals), filters by them (case-insensitively, as ``=~``) and by
the timespan, and summarizes requests, 5xx answers and the p95 of ``TotalDurationMs``. A query it
does not recognise, a wrong host, path or token audience is answered 400 and recorded in
``unexpected``.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlparse

import requests
from azure.core.pipeline.transport import RequestsTransport

from tests.fake_arm import _Answerer, token_audience

LOGS_HOST = "api.loganalytics.io"
_LET = re.compile(r'^let (endpoint_name|deployment_name) = "((?:[^"\\]|\\.)*)";$', re.MULTILINE)


@dataclass
class TrafficRow:
    time: datetime
    endpoint: str
    deployment: str
    code: int
    duration_ms: int


@dataclass
class LogsCall:
    path: str
    body: dict[str, Any]
    status: int = 0


@dataclass
class FakeLogs(RequestsTransport):
    workspace: str  # the Workspace ID (GUID) or the workspace's resource id the service must query
    rows: list[TrafficRow] = field(default_factory=list)
    calls: list[LogsCall] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    faults: list[tuple[int, int, dict[str, str]]] = field(default_factory=list)  # [status, times, headers]
    partial: bool = False

    def __post_init__(self) -> None:
        session = requests.Session()
        session.trust_env = False
        session.adapters.clear()
        session.mount("https://", _Answerer(self))  # type: ignore[arg-type]
        super().__init__(session=session)
        self._lock = threading.Lock()

    def sleep(self, duration: float) -> None:
        """azure-core's own waits: never slept (its retries are off anyway)."""

    def serve(self, when: datetime, endpoint: str, deployment: str, *, ok: int, errors: int = 0, ms: int = 40) -> None:
        """``ok`` requests answered 200 and ``errors`` answered 503 at ``when``, taking ``ms`` each."""
        for i in range(ok + errors):
            self.rows.append(TrafficRow(when, endpoint, deployment, 503 if i < errors else 200, ms))

    def fail(self, status: int, *, times: int = 1, headers: dict[str, str] | None = None) -> None:
        self.faults.append([status, times, dict(headers or {})])  # type: ignore[arg-type]

    def answer(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], Any]:
        url = urlparse(str(request.url))
        raw = request.body
        body = json.loads(raw.decode() if isinstance(raw, bytes) else (raw or "{}"))
        call = LogsCall(unquote(url.path), body)
        with self._lock:
            self.calls.append(call)
            call.status, headers, out = self._answer(call, url.hostname or "", request.headers.get("Authorization"))
            return call.status, headers, out

    def _answer(self, call: LogsCall, host: str, auth: str | None) -> tuple[int, dict[str, str], Any]:
        def bad(why: str) -> tuple[int, dict[str, str], Any]:
            self.unexpected.append(f"{call.path}: {why}")
            return 400, {}, {"error": {"code": "BadArgumentError", "message": why}}

        if host != LOGS_HOST:
            return bad(f"host {host}")
        if token_audience(auth) != f"https://{LOGS_HOST}":
            return bad("no bearer token for https://api.loganalytics.io")
        expected = (
            f"/v1{self.workspace}/query" if self.workspace.startswith("/") else f"/v1/workspaces/{self.workspace}/query"
        )
        if call.path != expected:
            return bad(f"path {call.path}, expected {expected}")
        for fault in self.faults:
            if fault[1] > 0:
                fault[1] -= 1
                code = "ServiceUnavailable" if fault[0] >= 500 else "Forbidden"
                return fault[0], fault[2], {"error": {"code": code, "message": f"the service answered {fault[0]}"}}
        query = str(call.body.get("query") or "")
        names = dict(_LET.findall(query))
        if set(names) != {"endpoint_name", "deployment_name"} or "AmlOnlineEndpointTrafficLog" not in query:
            return bad("a query the fake does not know")
        endpoint, deployment = (json.loads(f'"{names[k]}"') for k in ("endpoint_name", "deployment_name"))
        start_text, _, end_text = str(call.body.get("timespan") or "").partition("/")
        start, end = datetime.fromisoformat(start_text), datetime.fromisoformat(end_text)
        rows = [
            r
            for r in self.rows
            if r.endpoint.lower() == endpoint.lower()
            and r.deployment.lower() == deployment.lower()
            and start <= r.time < end
        ]
        durations = sorted(r.duration_ms for r in rows)
        p95 = durations[max(0, math.ceil(0.95 * len(durations)) - 1)] if durations else None
        table = {
            "name": "PrimaryResult",
            "columns": [
                {"name": "requests", "type": "long"},
                {"name": "errors", "type": "long"},
                {"name": "p95_ms", "type": "real"},
            ],
            "rows": [[len(rows), sum(1 for r in rows if r.code >= 500), p95]],
        }
        out: dict[str, Any] = {"tables": [table]}
        if self.partial:
            out["error"] = {"code": "PartialError", "message": "There were some errors when processing your query."}
        return 200, {}, out
