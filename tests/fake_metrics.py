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

What it checks, as the service does (Azure Monitor docs, "Migrate from the metrics API to the
getBatch API", batching restrictions and troubleshooting; the supported-metrics reference):

- the caller: the batch API is a subscription-level API, so the caller's ``principal`` must be allowed
  ``Microsoft.Insights/metrics/read`` at the subscription itself: the role on the workspace or on each
  endpoint is not enough ("even if users have Monitoring Reader on all the resources being queried
  ... the request fails"): **401**. ``principal`` is a :class:`tests.rbac_model.Principal`
  (None: the app's identity as ``infra/`` assigns its roles), and the token must be its (``oid``);
- ``provider_registered`` False: the Microsoft.Insights provider is not registered in the
  subscription: **403**; ``throttle(n)``: the next n calls are **529** (the metrics backend throttling);
- the host (``<region>.metrics.monitor.azure.com``), the bearer token's audience
  (``https://metrics.monitor.azure.com``), the path, the api-version, the namespace and metric names,
  the interval, every resource id in the path's subscription and of the namespace's type, at most
  50 of them;
- the aggregations: only those the supported-metrics reference lists for each metric
  (:data:`METRICS`; ``RequestsPerMinute`` and the latency percentiles list ``Average`` only); another
  is answered **501** "Sampling type is not found" (see :data:`UNSUPPORTED_AGGREGATION`);
- the region: the batch API does *not* refuse resources of another region than the host's: "the only
  indicator that the region may be wrong ... is getting empty time series data for all that
  resource". So a resource of :attr:`FakeMetrics.region` (the workspace's region) asked of another
  region's host is answered with ``"timeseries": []``, and the call is listed in ``wrong_region``;
- the filter's syntax: clauses joined by ``and``, each one dimension (``or`` only between values of
  the same dimension: "the logical 'or' operator cannot separate two different metadata names"),
  every dimension one the metrics have ("does not support requested dimension combination").

With a filter it returns at most ``top`` series per metric and resource, 10 when ``top`` is not
given (ordered by their total, largest first: the order is an assumption). A minute's value of a
series is the one sample of that minute for that combination of dimension values (several ``serve``
calls for one minute add up, as requests do); a point aggregates the minute's values of the
combinations the series merges (its ``average`` is their mean). Minutes without samples are points
with no aggregation values. A request it does not know is answered 400 and recorded in
``unexpected``, as is an aggregation the metric does not support.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tests import rbac, rbac_model
from tests.fake_http import Answer, FakeService, Refusal, Request, Unexpected, token_audience, token_claims

AUDIENCE = "https://metrics.monitor.azure.com"
API_VERSIONS = frozenset({"2024-02-01"})  # what azure-monitor-querymetrics 1.0.0 sends
NAMESPACE = "microsoft.machinelearningservices/workspaces/onlineendpoints"
_PERCENTILES = ("RequestLatency_P50", "RequestLatency_P90", "RequestLatency_P95", "RequestLatency_P99")
# name -> (unit, dimensions, aggregations): the supported-metrics reference for
# Microsoft.MachineLearningServices/workspaces/onlineEndpoints lists each of these with "Average" only.
METRICS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "RequestsPerMinute": ("Count", ("deployment", "statusCode", "statusCodeClass", "modelStatusCode"), ("average",)),
    "RequestLatency": ("MilliSeconds", ("deployment",), ("average",)),
    **dict.fromkeys(_PERCENTILES, ("MilliSeconds", ("deployment",), ("average",))),
}
AGGREGATIONS = ("total", "average", "minimum", "maximum", "count")  # what the API's parameter takes
# An aggregation the metric does not support: Azure Monitor answers 501 Not Implemented, "Sampling type
# is not found. Metric: ..." (reported against the metrics API by the OpenTelemetry azuremonitor
# receiver: open-telemetry/opentelemetry-collector-contrib issue #43648 and PR #43880, "Collect only
# supported aggregations for each metric (501 not implemented issue)"). Unverified: that the batch API
# answers the same and the error body's code; the body here has the batch API's {"error": {...}} shape.
UNSUPPORTED_AGGREGATION = 501
MAX_RESOURCES = 50  # "Up to 50 unique resource IDs may be specified in each call"
METRICS_READ = "Microsoft.Insights/metrics/read"
MONITORING_READER = "43d0d8ad-25c7-4714-9337-8ba259a9fe05"
_HOST = re.compile(r"^([a-z0-9]+)\.metrics\.monitor\.azure\.com$")
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


class FakeMetrics(FakeService):
    """The batch API of ``subscription``, its endpoints in ``region``; ``principal`` the caller's
    roles (None: the app's identity as ``infra/`` assigns them, beside a workspace of this
    subscription); ``provider_registered`` False: Microsoft.Insights is not registered."""

    def __init__(
        self,
        subscription: str,
        region: str = "westeurope",
        *,
        principal: rbac_model.Principal | None = None,
        provider_registered: bool = True,
    ) -> None:
        super().__init__()
        self.subscription, self.region, self.provider_registered = subscription, region, provider_registered
        self.principal = principal if principal is not None else rbac.app(subscription, "rg-ml", "ws-ml")
        self.samples: list[Sample] = []
        self.calls: list[Request] = []
        self.wrong_region: list[str] = []  # calls to another region's host
        # One call's points per series (starttime..endtime at the interval). Azure documents no cap (the batch
        # API has no paging, and a large volume is to be split into several queries: docs/azure-behaviour.md),
        # so there is none unless a test sets one, to show that a read keeps within it; over it: 400.
        self.max_points: int | None = None

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

    def fault_code(self, status: int) -> str:
        return {429: "TooManyRequests", 403: "Forbidden", 529: "TooManyRequests"}.get(status, "ServiceUnavailable")

    def throttle(self, times: int = 1) -> None:
        """The next ``times`` calls are throttled by the metrics backend: 529 (the batch API's docs)."""
        self.fail(529, times=times)

    # ------------------------------------------------------------------ answering

    def check(self, call: Request) -> None:
        host, auth = call.host, call.authorization
        if _HOST.match(host) is None:
            raise Unexpected(f"host {host}: not a regional metrics endpoint (<region>.metrics.monitor.azure.com)")
        if token_audience(auth) != AUDIENCE:
            raise Unexpected(f"no bearer token for {AUDIENCE}")
        if call.path != f"/subscriptions/{self.subscription}/metrics:getBatch":
            raise Unexpected(f"path {call.path}")
        if call.query.get("api-version") not in API_VERSIONS:
            raise Unexpected(f"api-version {call.query.get('api-version')}")
        subscription = f"/subscriptions/{self.subscription}"
        caller = str(token_claims(auth).get("oid"))
        if caller != self.principal.oid or not self.principal.allows(METRICS_READ, subscription):
            # The status is the docs' ("401 authorization errors"); the body's code and text are
            # unverified, written as ARM words an authorization failure.
            raise Refusal(
                401,
                "AuthorizationFailed",
                f"The client does not have authorization to perform action '{METRICS_READ}' over scope "
                f"'{subscription}': the metrics:getBatch API is a subscription level API and needs Monitoring "
                "Reader on the subscription itself.",
            )
        if not self.provider_registered:  # status from the docs; the body's words are unverified
            raise Refusal(
                403,
                "SubscriptionNotRegistered",
                f"The subscription '{self.subscription}' is not registered with the resource provider "
                "'Microsoft.Insights'.",
            )

    def handle(self, call: Request) -> Answer:
        q, host = call.query, call.host
        region = _HOST.match(host)
        assert region is not None  # checked
        call.body = call.body or {}
        if str(q.get("metricnamespace", "")).lower() != NAMESPACE:
            raise Unexpected(f"metricnamespace {q.get('metricnamespace')}")
        names = [n for n in str(q.get("metricnames", "")).split(",") if n]
        if not names or any(n not in METRICS for n in names):
            raise Unexpected(f"metricnames {names}")
        aggregations = [a.strip().lower() for a in str(q.get("aggregation", "average")).split(",")]
        if any(a not in AGGREGATIONS for a in aggregations):
            raise Unexpected(f"aggregation {q.get('aggregation')}")
        for name in names:
            for a in aggregations:
                if a not in METRICS[name][2]:
                    why = (
                        f"Sampling type is not found. Metric: {name}, sampling type: {a.capitalize()} "
                        f"(supported: {', '.join(x.capitalize() for x in METRICS[name][2])})"
                    )
                    self.unexpected.append(f"{call.method} {call.path}: {why}")  # the service never asks it
                    raise Refusal(UNSUPPORTED_AGGREGATION, "NotImplemented", why)
        if q.get("interval", "PT1M") != "PT1M":
            raise Unexpected(f"interval {q.get('interval')}: the fake keeps one-minute samples only")
        start, end = (
            datetime.fromisoformat(str(q.get(k, "")).replace("Z", "+00:00")) for k in ("starttime", "endtime")
        )
        if end <= start:
            raise Unexpected("endtime is not after starttime")
        points = int((end - start) / timedelta(minutes=1))
        if self.max_points is not None and points > self.max_points:  # the words are made up: no cap is documented
            raise Refusal(400, "BadRequest", f"{points} points per time series requested; at most {self.max_points}")
        ids = call.body.get("resourceids")
        if not isinstance(ids, list) or not ids:
            raise Unexpected("no resourceids in the body")
        if len({str(r).lower() for r in ids}) > MAX_RESOURCES:  # the body's words are unverified
            raise Unexpected(f"{len(ids)} resource ids: at most {MAX_RESOURCES} may be specified in each call")
        for rid in ids:
            match = _RESOURCE.match(str(rid))
            if match is None or match["sub"] != self.subscription:
                raise Unexpected(f"resource {rid} is not an online endpoint of subscription {self.subscription}")
        dims = self._filter(q.get("filter"), names)
        top = int(q.get("top", "10")) if q.get("filter") else None
        here = region[1] == self.region
        if not here:
            self.wrong_region.append(f"{host}: resources in {self.region}")
        values = [self._resource(str(rid), names, aggregations, start, end, dims, top, here) for rid in ids]
        return 200, {}, {"values": values}

    def _filter(self, text: str | None, names: list[str]) -> dict[str, list[str]]:
        """``A eq 'a1' or A eq 'a2' and B eq '*'`` -> {A: [a1, a2], B: ['*']}."""
        if not text:
            return {}
        out: dict[str, list[str]] = {}
        for clause in text.split(" and "):
            parts = [_CLAUSE.match(p) for p in clause.split(" or ")]
            if any(p is None for p in parts):
                raise Unexpected(f"filter {text!r}: cannot parse {clause!r}")
            dims = {p[1] for p in parts if p is not None}
            if len(dims) != 1:
                raise Unexpected(
                    f"filter {text!r}: the logical 'or' operator cannot separate two different metadata names"
                )
            [dim] = dims
            known = {d.lower(): d for d in METRICS[names[0]][1]}
            for name in names:
                if dim.lower() not in {d.lower() for d in METRICS[name][1]}:
                    raise Unexpected(f"Metric: {name} does not support requested dimension combination: {dim}")
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
        here: bool = True,
    ) -> dict[str, Any]:
        minutes = []
        t = start
        while t < end:
            minutes.append(t)
            t += timedelta(minutes=1)
        metrics = []
        for name in names:
            # One value per minute and combination of all the dimension values (what was served in it).
            # A count adds up (requests served in the minute), a latency is their mean.
            served: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...], datetime], list[float]] = {}
            for s in self.samples if here else ():
                if s.resource.lower() != rid.lower() or s.metric != name or not start <= s.minute < end:
                    continue
                if not self._selected(s, dims):
                    continue
                key = tuple(s.dims.get(d, "") for d in dims)
                served.setdefault((key, tuple(sorted(s.dims.items())), s.minute), []).append(s.value)
            count = METRICS[name][0] == "Count"
            series: dict[tuple[str, ...], dict[datetime, list[float]]] = {}
            for (key, _, minute), raw in served.items():
                value = sum(raw) if count else sum(raw) / len(raw)
                series.setdefault(key, {}).setdefault(minute, []).append(value)
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
