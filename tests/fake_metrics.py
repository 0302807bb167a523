"""An in-process Azure Monitor metrics batch API (``<region>.metrics.monitor.azure.com``) for the
real ``MetricsClient`` (azure-monitor-querymetrics).

``MetricsClient(endpoint, credential, transport=FakeMetrics(...))``: the SDK sends its real request,
``POST /subscriptions/{sub}/metrics:getBatch?api-version=...&metricnamespace=...&metricnames=...
&starttime=...&endtime=...&interval=...&aggregation=...&filter=...&top=...`` with the body
``{"resourceids": [...]}``, and this transport answers in the documented shape (Azure Monitor docs,
"Migrate from the metrics API to the getBatch API"; the 2024-02-01 REST model): ``values`` holds one
item per resource (``starttime``, ``endtime``, ``interval``, ``namespace``, ``resourceregion``,
``resourceid``, ``value``: one metric each, ``name.value``, ``unit``, ``timeseries`` of
``metadatavalues`` and ``data`` points with ``timeStamp`` and the requested aggregations).

What it holds: per-minute samples of the online endpoints' platform metrics, as the supported-metrics
reference defines them: ``RequestsPerMinute`` by ``deployment``, ``statusCode``, ``statusCodeClass``
and ``modelStatusCode``; ``RequestLatency_P50/_P90/_P95/_P99`` by ``deployment``; one-minute grain.

What it checks, as the service does: the host (the region's), the bearer token's audience
(``https://metrics.monitor.azure.com``), the path, the api-version, the namespace and metric names,
the aggregations, the interval, every resource id in the subscription and of the namespace's type
(the batch API refuses others), and the filter's syntax: clauses joined by ``and``, each one
dimension (``or`` only between values of the same dimension: "the logical 'or' operator cannot
separate two different metadata names"), every dimension one the metrics have ("does not support
requested dimension combination"). With a filter it returns at most ``top`` series per metric and
resource, 10 when ``top`` is not given (ordered by their total, largest first: the order is an
assumption). Minutes without samples are points with no aggregation values. A request it does not
know is answered 400 and recorded in ``unexpected``.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import requests
from azure.core.pipeline.transport import RequestsTransport

from tests.fake_arm import offline_session, token_audience

AUDIENCE = "https://metrics.monitor.azure.com"
API_VERSIONS = frozenset({"2024-02-01"})  # what azure-monitor-querymetrics 1.0.0 sends
NAMESPACE = "microsoft.machinelearningservices/workspaces/onlineendpoints"
_PERCENTILES = ("RequestLatency_P50", "RequestLatency_P90", "RequestLatency_P95", "RequestLatency_P99")
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {  # name -> (unit, dimensions)
    "RequestsPerMinute": ("Count", ("deployment", "statusCode", "statusCodeClass", "modelStatusCode")),
    **dict.fromkeys(_PERCENTILES, ("MilliSeconds", ("deployment",))),
}
AGGREGATIONS = ("total", "average", "minimum", "maximum", "count")
_CLAUSE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*) eq '([^']*)'\s*$")
_RESOURCE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/[^/]+/providers/Microsoft\.MachineLearningServices/"
    r"workspaces/[^/]+/onlineEndpoints/[^/]+$",
    re.IGNORECASE,
)


@dataclass
class Sample:
    """One minute of one metric for one combination of dimension values."""

    resource: str
    metric: str
    minute: datetime
    dims: dict[str, str]
    value: float


@dataclass
class MetricsCall:
    path: str
    query: dict[str, str]
    body: dict[str, Any]
    status: int = 0


class BadRequest(Exception):
    pass


@dataclass
class FakeMetrics(RequestsTransport):
    subscription: str
    region: str = "westeurope"
    samples: list[Sample] = field(default_factory=list)
    calls: list[MetricsCall] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    faults: list[list[Any]] = field(default_factory=list)  # [status, times, headers]

    def __post_init__(self) -> None:
        super().__init__(session=offline_session(self))
        self._lock = threading.Lock()

    def sleep(self, duration: float) -> None:
        """azure-core's own waits: never slept (its retries are off anyway)."""

    @property
    def host(self) -> str:
        return f"{self.region}.metrics.monitor.azure.com"

    # ------------------------------------------------------------------ seeding

    def serve(
        self,
        resource: str,
        minute: datetime,
        deployment: str,
        *,
        ok: int = 0,
        errors: int = 0,
        model_errors: int = 0,
        timeouts: int = 0,
        throttled: int = 0,
        p95_ms: float | None = 40.0,
    ) -> None:
        """One minute of a deployment's traffic: ``ok`` 200s; ``errors`` 503s from the platform;
        ``model_errors`` 424s (the model answered 500); ``timeouts`` 408s; ``throttled`` 429s."""
        at = minute.replace(second=0, microsecond=0)
        for code, model, n in (
            ("200", "200", ok),
            ("503", "", errors),
            ("424", "500", model_errors),
            ("408", "", timeouts),
            ("429", "", throttled),
        ):
            if n:
                dims = {
                    "deployment": deployment,
                    "statusCode": code,
                    "statusCodeClass": f"{code[0]}xx",
                    "modelStatusCode": model,
                }
                self.samples.append(Sample(resource, "RequestsPerMinute", at, dims, float(n)))
        if p95_ms is not None and ok + errors + model_errors + timeouts + throttled:
            self.samples.append(Sample(resource, "RequestLatency_P95", at, {"deployment": deployment}, p95_ms))

    def fail(self, status: int, *, times: int = 1, headers: dict[str, str] | None = None) -> None:
        self.faults.append([status, times, dict(headers or {})])

    # ------------------------------------------------------------------ answering

    def answer(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], Any]:
        url = urlparse(str(request.url))
        raw = request.body
        body = json.loads(raw.decode() if isinstance(raw, bytes) else (raw or "{}"))
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        call = MetricsCall(unquote(url.path), query, body)
        with self._lock:
            self.calls.append(call)
            try:
                call.status, headers, out = self._answer(call, url.hostname or "", request.headers.get("Authorization"))
            except BadRequest as exc:
                self.unexpected.append(f"{call.path}?{url.query}: {exc}")
                call.status, headers, out = 400, {}, {"error": {"code": "BadRequest", "message": str(exc)}}
            return call.status, headers, out

    def _answer(self, call: MetricsCall, host: str, auth: str | None) -> tuple[int, dict[str, str], Any]:
        if host != self.host:
            raise BadRequest(f"host {host}, expected {self.host}")
        if token_audience(auth) != AUDIENCE:
            raise BadRequest(f"no bearer token for {AUDIENCE}")
        if call.path != f"/subscriptions/{self.subscription}/metrics:getBatch":
            raise BadRequest(f"path {call.path}")
        q = call.query
        if q.get("api-version") not in API_VERSIONS:
            raise BadRequest(f"api-version {q.get('api-version')}")
        for fault in self.faults:
            if fault[1] > 0:
                fault[1] -= 1
                code = (
                    "TooManyRequests" if fault[0] == 429 else "Forbidden" if fault[0] == 403 else "ServiceUnavailable"
                )
                return fault[0], fault[2], {"error": {"code": code, "message": f"the service answered {fault[0]}"}}
        if str(q.get("metricnamespace", "")).lower() != NAMESPACE:
            raise BadRequest(f"metricnamespace {q.get('metricnamespace')}")
        names = [n for n in str(q.get("metricnames", "")).split(",") if n]
        if not names or any(n not in METRICS for n in names):
            raise BadRequest(f"metricnames {names}")
        aggregations = [a.strip().lower() for a in str(q.get("aggregation", "average")).split(",")]
        if any(a not in AGGREGATIONS for a in aggregations):
            raise BadRequest(f"aggregation {q.get('aggregation')}")
        if q.get("interval", "PT1M") != "PT1M":
            raise BadRequest(f"interval {q.get('interval')}: the fake keeps one-minute samples only")
        start, end = (
            datetime.fromisoformat(str(q.get(k, "")).replace("Z", "+00:00")) for k in ("starttime", "endtime")
        )
        if end <= start:
            raise BadRequest("endtime is not after starttime")
        ids = call.body.get("resourceids")
        if not isinstance(ids, list) or not ids:
            raise BadRequest("no resourceids in the body")
        for rid in ids:
            match = _RESOURCE.match(str(rid))
            if match is None or match["sub"] != self.subscription:
                raise BadRequest(f"resource {rid} is not an online endpoint of subscription {self.subscription}")
        dims = self._filter(q.get("filter"), names)
        top = int(q.get("top", "10")) if q.get("filter") else None
        values = [self._resource(str(rid), names, aggregations, start, end, dims, top) for rid in ids]
        return 200, {}, {"values": values}

    def _filter(self, text: str | None, names: list[str]) -> dict[str, list[str]]:
        """``A eq 'a1' or A eq 'a2' and B eq '*'`` -> {A: [a1, a2], B: ['*']}."""
        if not text:
            return {}
        out: dict[str, list[str]] = {}
        for clause in text.split(" and "):
            parts = [_CLAUSE.match(p) for p in clause.split(" or ")]
            if any(p is None for p in parts):
                raise BadRequest(f"filter {text!r}: cannot parse {clause!r}")
            dims = {p[1] for p in parts if p is not None}
            if len(dims) != 1:
                raise BadRequest(
                    f"filter {text!r}: the logical 'or' operator cannot separate two different metadata names"
                )
            [dim] = dims
            known = {d.lower(): d for d in METRICS[names[0]][1]}
            for name in names:
                if dim.lower() not in {d.lower() for d in METRICS[name][1]}:
                    raise BadRequest(f"Metric: {name} does not support requested dimension combination: {dim}")
            out[known[dim.lower()]] = [p[2] for p in parts if p is not None]
        return out

    @staticmethod
    def _selected(sample: Sample, dims: dict[str, list[str]]) -> bool:
        """Whether the filter keeps ``sample``: for each dimension, '*' or one of its values (any case)."""
        for dim, values in dims.items():
            if "*" not in values and sample.dims.get(dim, "").lower() not in {v.lower() for v in values}:
                return False
        return True

    def _resource(
        self,
        rid: str,
        names: list[str],
        aggregations: list[str],
        start: datetime,
        end: datetime,
        dims: dict[str, list[str]],
        top: int | None,
    ) -> dict[str, Any]:
        minutes = []
        t = start
        while t < end:
            minutes.append(t)
            t += timedelta(minutes=1)
        metrics = []
        for name in names:
            series: dict[tuple[str, ...], dict[datetime, list[float]]] = {}
            for s in self.samples:
                if s.resource.lower() != rid.lower() or s.metric != name or not start <= s.minute < end:
                    continue
                if not self._selected(s, dims):
                    continue
                key = tuple(s.dims.get(d, "") for d in dims)
                series.setdefault(key, {}).setdefault(s.minute, []).append(s.value)
            ordered = sorted(series.items(), key=lambda kv: -sum(sum(v) for v in kv[1].values()))
            if top is not None:
                ordered = ordered[:top]
            timeseries = []
            for key, by_minute in ordered:
                data = []
                for m in minutes:
                    point: dict[str, Any] = {"timeStamp": m.strftime("%Y-%m-%dT%H:%M:%SZ")}
                    values = by_minute.get(m)
                    if values:
                        agg = {
                            "total": sum(values),
                            "average": sum(values) / len(values),
                            "minimum": min(values),
                            "maximum": max(values),
                            "count": float(len(values)),
                        }
                        point.update({a: agg[a] for a in aggregations})
                    data.append(point)
                timeseries.append(
                    {
                        "metadatavalues": [
                            {"name": {"value": d.lower(), "localizedValue": d}, "value": v}
                            for d, v in zip(dims, key, strict=True)
                        ],
                        "data": data,
                    }
                )
            metrics.append(
                {
                    "id": f"{rid}/providers/Microsoft.Insights/metrics/{name}",
                    "type": "Microsoft.Insights/metrics",
                    "name": {"value": name, "localizedValue": name},
                    "displayDescription": name,
                    "unit": METRICS[name][0],
                    "timeseries": timeseries,
                    "errorCode": "Success",
                }
            )
        return {
            "starttime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endtime": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "interval": "PT1M",
            "value": metrics,
            "namespace": NAMESPACE,
            "resourceregion": self.region,
            "resourceid": rid,
        }
