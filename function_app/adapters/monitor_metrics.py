"""The rollout health check from the endpoint's platform metrics (azure-monitor-querymetrics): the
``metrics`` source, which works with no setup.

A managed online endpoint publishes, without any diagnostic setting, ``RequestsPerMinute`` (with
the dimensions ``deployment``, ``statusCode``, ``statusCodeClass`` and ``modelStatusCode``) and
``RequestLatency_P50/_P90/_P95/_P99`` (with ``deployment``), at a one-minute grain (Azure Monitor's
supported-metrics reference for ``Microsoft.MachineLearningServices/workspaces/onlineEndpoints``).
:meth:`MonitorMetrics.read` asks the metrics batch API (``POST {regional endpoint}/subscriptions/
{sub}/metrics:getBatch``, through ``MetricsClient.query_resources``) twice for the endpoint's
resource id:

1. ``RequestsPerMinute``, ``Average`` per minute (the only aggregation the supported-metrics
   reference lists for it; another is refused), split by ``deployment`` (the candidate and the
   baseline), ``statusCode`` and ``modelStatusCode``: each series is then one combination of those
   values, its minute's value the requests of that minute; each minute's histogram is kept (the
   judge compares the deployments minute by minute) and the window's is the sum of its minutes':
   the histograms that the policy's ``failure_codes`` count (:mod:`handlers.analysis`);
2. ``RequestLatency_P95``, ``Average`` per minute, by ``deployment``: each minute's p95 is kept, and a
   window's is the mean of its minutes' p95s weighted by their requests (an approximation:
   percentiles do not add up).

Asked for the baseline's history too (``before``), the first request begins there; the baseline's
minutes before the window are its reading's ``history``, the candidate's are dropped, and the window's
counts are its own minutes'. Two requests, because the batch API takes one filter for all the metrics of a request, and a filter
on ``statusCode`` is refused for a metric that lacks that dimension. The window is rounded to whole
minutes inside ``since``..``until`` (a minute's point covers that whole minute, and one that began
before the step would count the previous step's traffic); the caller ends it the source's lag
before now (:func:`handlers.analysis.window`). A history of up to 24 hours is asked in spans of at most :data:`SPAN`
(the API documents no cap on a request's points, and no paging; docs/azure-behaviour.md). With a filter, the API returns only ``top`` series
per metric (10 by default), so ``top`` is set well above what two deployments produce, and a reading
that reaches it says so.

The client needs the regional endpoint of the resources' region (``https://<region>.metrics.monitor.azure.com``):
online endpoints are in their workspace's region, which need not be the function app's. The batch
API does not refuse another region: it answers empty time series, which would read as "no traffic",
so the region is the workspace's (RETRAIN_METRICS_REGION, which infra sets from the workspace) or
nothing is read. The identity needs Monitoring Reader (``43d0d8ad-25c7-4714-9337-8ba259a9fe05``) on
the *subscription itself*: the batch API is a subscription-level API and answers 401 without it, even
with the role on every endpoint. 403 means the Microsoft.Insights provider is not registered in the
subscription; 529 is the backend's throttling, retried like 429 (Azure Monitor docs, "Migrate from
the metrics API to the getBatch API", troubleshooting). ``azure.monitor.querymetrics`` is imported
on the first read, never at import, with the worker's one credential (the managed identity of
AZURE_CLIENT_ID, :func:`function_app.runtime.make_credential`); the client's own retries are off: the retry budget (:mod:`function_app.retry`)
and the error translation (:mod:`function_app.adapters.azure_errors`) are the Azure ML adapter's.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, HttpResponseError

from function_app.adapters import azure_errors
from function_app.adapters.clients import LazyClient, logged_readings, sdk_options
from function_app.adapters.metric_series import Histogram, histogram, p95s, summed
from function_app.retry import Budget, RetryPolicy
from handlers.analysis import Reading
from handlers.errors import PermanentError
from handlers.records import iso

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from function_app.settings import Settings

log = logging.getLogger(__name__)

SOURCE = "metrics"
NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
REQUESTS = "RequestsPerMinute"
LATENCY = "RequestLatency_P95"
MONITORING_READER = "43d0d8ad-25c7-4714-9337-8ba259a9fe05"
TOP = 500  # series per metric: two deployments x their (statusCode, modelStatusCode) pairs, with room
GRAIN = timedelta(minutes=1)
# The longest span one request asks for (360 one-minute points per series). The batch API documents no cap on
# a request's points or span, only that it has no paging and that a large volume is to be split into several
# queries (Azure Monitor docs, "Migrate from the metrics API to the getBatch API"): a baseline's history of up
# to 24 hours is asked in spans of this size, so a cap Azure does not document cannot fail the read.
SPAN = timedelta(hours=6)
# Names as Azure ML allows them (letters, digits, dashes, at most 32): checked before they go into a filter.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,31}$")
_REGION = re.compile(r"^[a-z0-9]+$")


REGION_FIX = (
    "set RETRAIN_METRICS_REGION to the Azure ML workspace's region (az ml workspace show --query location; "
    "its online endpoints are in it), not the function app's"
)


def regional_endpoint(region: str) -> str:
    """``https://<region>.metrics.monitor.azure.com`` for an Azure region name ('westeurope', or
    its display name 'West Europe')."""
    name = region.replace(" ", "").lower()
    if not _REGION.match(name):
        raise ValueError(
            f"{region!r} is not an Azure region name; give the region of the online endpoint, e.g. 'westeurope'"
        )
    return f"https://{name}.metrics.monitor.azure.com"


def endpoint_resource_id(subscription: str, resource_group: str, workspace: str, endpoint: str) -> str:
    return (
        f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/"
        f"Microsoft.MachineLearningServices/workspaces/{workspace}/onlineEndpoints/{endpoint}"
    )


def deployment_filter(candidate: str, baseline: str | None, *splits: str) -> str:
    """The batch API's filter: the deployments (``or`` only between values of one dimension), then
    each dimension of ``splits`` split out (``eq '*'``)."""
    names = [candidate] + ([baseline] if baseline is not None else [])
    for name in names:
        if not _NAME.match(name):
            raise PermanentError(
                f"deployment name {name!r} is not an Azure ML online deployment name (letters, digits and dashes, "
                "starting with a letter, at most 32); it is not put into a metrics filter"
            )
    clauses = [" or ".join(f"deployment eq '{n}'" for n in names)] + [f"{d} eq '*'" for d in splits]
    return " and ".join(clauses)


def _whole_minutes(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """The whole minutes inside ``since``..``until``: since rounded up, until rounded down."""

    def floor(t: datetime) -> datetime:
        return t.replace(second=0, microsecond=0)

    start = floor(since) if floor(since) == since else floor(since) + GRAIN
    end = max(start, floor(until))
    return start, end


class MonitorMetrics:
    """The health of deployments from their endpoint's platform metrics: a
    :class:`handlers.analysis.HealthSource`."""

    name = "metrics"

    def __init__(self, client: Any, subscription: str, resource_group: str, workspace: str, retry: RetryPolicy) -> None:
        """``client``: a ``MetricsClient`` for the endpoints' region, or a function that builds one
        on first use (once per worker)."""
        self._client = LazyClient(client)
        self.subscription, self.resource_group, self.workspace = subscription, resource_group, workspace
        self.retry = retry

    @classmethod
    def build(
        cls,
        *,
        subscription: str,
        resource_group: str,
        workspace: str,
        region: str | None = None,
        endpoint: str | None = None,
        deadline: float = 25.0,
        credential: TokenCredential,
        retry: RetryPolicy | None = None,
        audience: str | None = None,
        **client_kwargs: Any,
    ) -> MonitorMetrics:
        """A source for the online endpoints of one Azure ML workspace. ``endpoint`` is the metrics
        endpoint (``https://<region>.metrics.monitor.azure.com``), or it is derived from ``region``;
        ``audience`` only for a sovereign cloud. Nothing is imported or built until the first read."""
        if endpoint is None:
            if not region:
                raise ValueError(
                    "the metrics health source needs the region of the online endpoints, which is the Azure ML "
                    "workspace's (e.g. 'westeurope'), or the regional metrics endpoint "
                    f"(https://<region>.metrics.monitor.azure.com): {REGION_FIX}"
                )
            endpoint = regional_endpoint(region)
        if not endpoint.startswith("https://"):
            raise ValueError(
                f"{endpoint!r}: the metrics endpoint is an https URL like https://westeurope.metrics.monitor.azure.com"
            )
        url = endpoint

        def make() -> Any:
            from azure.monitor.querymetrics import MetricsClient  # lazily, on the first read

            extra = {"audience": audience} if audience else {}
            return MetricsClient(url, credential, **sdk_options(deadline, **extra, **client_kwargs))

        return cls(make, subscription, resource_group, workspace, retry or RetryPolicy(deadline=deadline))

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        region: str | None = None,
        endpoint: str | None = None,
        credential: TokenCredential,
        retry: RetryPolicy | None = None,
        **client_kwargs: Any,
    ) -> MonitorMetrics:
        """For the settings' Azure ML workspace and managed identity; ``region`` or ``endpoint`` as in
        :meth:`build` (no setting holds them yet). Needs no Log Analytics workspace."""
        return cls.build(
            subscription=settings.subscription_id,
            resource_group=settings.resource_group,
            workspace=settings.workspace_name,
            region=region,
            endpoint=endpoint,
            deadline=settings.deadline_seconds,
            credential=credential,
            retry=retry or RetryPolicy.from_settings(settings),
            **client_kwargs,
        )

    @property
    def client(self) -> Any:
        return self._client.get()

    def resource_id(self, endpoint: str) -> str:
        if not _NAME.match(endpoint):
            raise PermanentError(f"endpoint name {endpoint!r} is not an Azure ML online endpoint name")
        return endpoint_resource_id(self.subscription, self.resource_group, self.workspace, endpoint)

    def _series(
        self,
        budget: Budget,
        what: str,
        rid: str,
        metric: str,
        aggregation: str,
        flt: str,
        start: datetime,
        end: datetime,
    ) -> tuple[list[Any], bool]:
        """The time series of ``metric`` for the resource ``rid`` from ``start`` to ``end``, asked in spans
        of at most :data:`SPAN` (a series of one span and its namesake of the next cover different minutes:
        ``endtime`` is exclusive), through the retry budget; and whether a span returned :data:`TOP` series."""
        series: list[Any] = []
        truncated = False
        at = start
        while at < end:
            upto = min(at + SPAN, end)
            got = self._span(budget, what, rid, (metric, aggregation, flt), at, upto)
            series.extend(got)
            truncated = truncated or len(got) >= TOP
            at = upto
        return series, truncated

    def _span(
        self, budget: Budget, what: str, rid: str, query: tuple[str, str, str], start: datetime, end: datetime
    ) -> list[Any]:
        metric, aggregation, flt = query

        def run() -> Any:
            try:
                return self.client.query_resources(
                    resource_ids=[rid],
                    metric_namespace=NAMESPACE,
                    metric_names=[metric],
                    timespan=(start, end),
                    granularity=GRAIN,
                    aggregations=[aggregation],
                    filter=flt,
                    max_results=TOP,
                )
            except HttpResponseError as exc:
                if azure_errors.status_of(exc) == 501:  # returned, not raised: a 5xx, but no retry mends it
                    return exc
                raise

        try:
            results = budget.call(what, run)
            if isinstance(results, HttpResponseError):
                raise results
        except AzureError as exc:
            status = azure_errors.status_of(exc)
            if status == 401:
                raise PermanentError(
                    f"{what}: Azure Monitor refused the metrics batch API ({azure_errors.describe(exc)}); grant the "
                    f"function app's managed identity Monitoring Reader ({MONITORING_READER}) on the subscription "
                    f"{self.subscription} itself: the batch API is a subscription-level API, and the role on the "
                    "workspace or on each endpoint is not enough (infra/modules/metrics-reader.bicep assigns it)"
                ) from exc
            if status == 403:
                raise PermanentError(
                    f"{what}: Azure Monitor answered 403 ({azure_errors.describe(exc)}): the Microsoft.Insights "
                    f"resource provider is not registered in the subscription {self.subscription}; register it "
                    f"(az provider register --namespace Microsoft.Insights --subscription {self.subscription})"
                ) from exc
            if status == 501:  # an aggregation the metric does not support: no retry mends it
                raise PermanentError(
                    f"{what}: Azure Monitor does not serve {metric} with aggregation {aggregation} "
                    f"({azure_errors.describe(exc)})"
                ) from exc
            raise azure_errors.translate(exc, what) from exc
        return [s for result in results for m in result.metrics if m.name == metric for s in m.timeseries]

    def read(
        self,
        endpoint: str,
        candidate: str,
        baseline: str | None,
        since: datetime,
        until: datetime,
        before: datetime | None = None,
    ) -> tuple[Reading, Reading | None]:
        """The candidate's and the baseline's requests and p95 over the whole minutes of the window;
        with ``before``, the request for the requests begins there, and the baseline's minutes before
        the window are its reading's ``history`` (the candidate's are not read)."""
        rid = self.resource_id(endpoint)
        start, end = _whole_minutes(since, until)
        first = _whole_minutes(before, start)[0] if before is not None and baseline is not None else start
        names = f"{candidate} and {baseline}" if baseline else candidate
        what = f"reading the platform metrics of {endpoint}/{names}"
        counts_filter = deployment_filter(candidate, baseline, "statusCode", "modelStatusCode")
        latency_filter = deployment_filter(candidate, baseline)
        request = (
            f"POST metrics:getBatch resource={rid} metricnamespace={NAMESPACE} interval=PT1M "
            f"starttime={iso(start)} endtime={iso(end)}: "
            f"{REQUESTS} aggregation=Average filter={counts_filter!r}"
            + (f" from {iso(first)} (the baseline's history)" if first < start else "")
            + f"; {LATENCY} aggregation=Average filter={latency_filter!r}"
            + (f"; in spans of at most {SPAN.seconds // 3600}h" if end - first > SPAN else "")
        )
        empty = start >= end
        requests_series: list[Any] = []
        latency_series: list[Any] = []
        truncated = False
        if not empty:
            budget = self.retry.budget()
            requests_series, cut = self._series(budget, what, rid, REQUESTS, "Average", counts_filter, first, end)
            latency_series, cut_too = self._series(budget, what, rid, LATENCY, "Average", latency_filter, start, end)
            truncated = cut or cut_too
        codes, by_minute, per_minute = histogram(requests_series)
        history: dict[str, Histogram] = {}
        if first < start:  # the baseline's minutes before the window; the window's counts are its own minutes'
            window = iso(start)
            history = {at: h for at, h in by_minute.get(str(baseline).lower(), {}).items() if at < window}
            by_minute = {d: {at: h for at, h in ms.items() if at >= window} for d, ms in by_minute.items()}
            codes = {d: summed(ms.values()) for d, ms in by_minute.items()}
        window_p95, p95_by_minute = p95s(latency_series, per_minute)
        note = f"the metrics API returned its maximum of {TOP} series; the counts may be short" if truncated else None
        if empty:
            note = f"the window {iso(since)}..{iso(until)} holds no whole minute yet; no data"

        def reading(deployment: str) -> Reading:
            key = deployment.lower()
            minutes, latencies = by_minute.get(key, {}), p95_by_minute.get(key, {})
            return Reading.of(
                endpoint,
                deployment,
                iso(start),
                iso(end),
                codes.get(key, {}),
                window_p95.get(key),
                SOURCE,
                request,
                note,
                minutes=[(at, minutes.get(at, {}), latencies.get(at)) for at in sorted(set(minutes) | set(latencies))],
                history=[(at, h, None) for at, h in sorted(history.items())] if deployment == baseline else (),
            )

        return logged_readings(
            endpoint, SOURCE, (reading(candidate), reading(baseline) if baseline is not None else None)
        )
