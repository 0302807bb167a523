"""Both health sources, end to end: the real ``LogsQueryClient`` against the fake Log Analytics API
(rows of AmlOnlineEndpointTrafficLog) and the real ``MetricsClient`` against the fake metrics batch
API (per-minute platform metrics), read through their adapters and judged by
:func:`handlers.analysis.judge`. The same scenarios run against each source."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from function_app.adapters.monitor_health import MonitorHealth, NoHealthData, build_query
from function_app.adapters.monitor_metrics import (
    MonitorMetrics,
    deployment_filter,
    endpoint_resource_id,
    regional_endpoint,
)
from function_app.retry import RetryPolicy
from function_app.settings import Settings
from handlers import analysis
from handlers.analysis import HealthSource, Reading
from handlers.errors import PermanentError, TransientError
from handlers.rollout_rules import RolloutRule
from tests import rbac
from tests.conftest import REPO
from tests.fake_arm_common import FakeClock
from tests.fake_http import FakeCredential
from tests.fake_logs import FakeLogs
from tests.fake_metrics import MONITORING_READER, FakeMetrics

SUB, RG, WS = "7a3c5f0e-1111-4d2b-9e8a-2b6f1c0d9e77", "rg-mlops", "ws-retrain"
WORKSPACE_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{WS}"
APP = rbac.app(SUB, RG, WS)  # the app's identity, as infra/ assigns its roles (Monitoring Reader: the subscription)
LOGS_WORKSPACE = "5b1f3b5e-0000-4c55-9c3b-4a3f2d1e0c9b"
ENDPOINT, CAND, BASE = "churn-endpoint", "churn-cand", "blue"
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
STARTED = NOW - timedelta(minutes=13)
RULE = RolloutRule.model_validate({"steps": [10, 50, 100], "bake": "10m"})


class World:
    """One source and its fake; ``serve`` spreads a deployment's requests over the window's minutes."""

    name: str
    source: HealthSource
    fake: FakeLogs | FakeMetrics

    def serve(self, deployment: str, minutes: int = 10, start: int = 0, **per_minute: Any) -> None:
        """``per_minute`` in each of ``minutes`` minutes from the ``start``-th minute of the step."""
        raise NotImplementedError

    @property
    def lag(self) -> timedelta:
        return RULE.health.lag_for(self.name)

    def read(self, now: datetime | None = None) -> tuple[Reading, Reading | None]:
        """Over the step's window at ``now`` (default: when a whole bake is in, the source's lag after it)."""
        start, until = analysis.window(RULE.health, STARTED, now or STARTED + RULE.bake + self.lag, self.name)
        return self.source.read(ENDPOINT, CAND, BASE, start, until)

    def judge(self, now: datetime | None = None) -> analysis.Verdict:
        cand, base = self.read(now)
        baked = datetime.fromisoformat(cand.until) - datetime.fromisoformat(cand.since)
        return analysis.judge(RULE, cand, base, baked)


def retry() -> RetryPolicy:
    clock = FakeClock()
    return RetryPolicy(sleep=clock.sleep, clock=clock)


class LogsWorld(World):
    name = "logs"

    def __init__(self) -> None:
        self.fake = FakeLogs(LOGS_WORKSPACE)
        settings = Settings.from_env({"RETRAIN_LOG_ANALYTICS_WORKSPACE_ID": LOGS_WORKSPACE})
        self.source = MonitorHealth.from_settings(
            settings, credential=FakeCredential(), retry=retry(), transport=self.fake
        )

    def serve(self, deployment: str, minutes: int = 10, start: int = 0, **per_minute: Any) -> None:
        first = STARTED + timedelta(minutes=start, seconds=30)
        kinds = {"ok": "ok", "e5xx": "errors", "e424": "model_errors", "e408": "timeouts", "throttled": "throttled"}
        ms = per_minute.pop("p95", 40)
        for m in range(minutes):
            counts = {kinds[k]: v for k, v in per_minute.items()}
            assert isinstance(self.fake, FakeLogs)
            self.fake.serve(first + timedelta(minutes=m), ENDPOINT, deployment, ms=int(ms), **{"ok": 0, **counts})


class MetricsWorld(World):
    """The endpoints in westeurope (their workspace's region); the source asks ``region``'s batch
    endpoint as an identity holding ``principal``'s roles (default: the app's, as infra/ assigns them: Monitoring Reader on the subscription)."""

    name = "metrics"

    def __init__(self, region: str = "West Europe", principal: rbac.Principal | None = None) -> None:
        self.fake = FakeMetrics(SUB, region="westeurope", principal=principal or APP)
        settings = Settings.from_env(
            {"AZUREML_SUBSCRIPTION_ID": SUB, "AZUREML_RESOURCE_GROUP": RG, "AZUREML_WORKSPACE_NAME": WS}
        )
        assert settings.log_analytics_workspace_id is None  # no Log Analytics: the metrics need no setup
        self.source = MonitorMetrics.from_settings(
            settings, region=region, credential=FakeCredential(), retry=retry(), transport=self.fake
        )
        self.rid = endpoint_resource_id(SUB, RG, WS, ENDPOINT)

    def serve(self, deployment: str, minutes: int = 10, start: int = 0, **per_minute: Any) -> None:
        kinds = {"ok": "ok", "e5xx": "errors", "e424": "model_errors", "e408": "timeouts", "throttled": "throttled"}
        p95 = per_minute.pop("p95", 40.0)
        for m in range(start, start + minutes):
            counts = {kinds[k]: v for k, v in per_minute.items()}
            assert isinstance(self.fake, FakeMetrics)
            self.fake.serve(self.rid, STARTED + timedelta(minutes=m), deployment, p95_ms=p95, **counts)


@pytest.fixture(params=["logs", "metrics"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    built: World = LogsWorld() if request.param == "logs" else MetricsWorld()
    yield built
    assert built.fake.unexpected == []


# --------------------------------------------------------------------------- the scenarios, on each source


def test_424_and_408_count_as_failures(world: World) -> None:
    world.serve(CAND, minutes=1, ok=10, e424=60, e408=30)  # the reading: 0 errors, healthy, advance
    world.serve(BASE, ok=540, e5xx=5)

    cand, base = world.read()

    counts = cand.counts(RULE.health.failure_codes)
    assert (counts.requests, counts.failures, counts.by_class["424"], counts.by_class["408"]) == (100, 90, 60, 30)
    assert base is not None and base.counts().failures == 50 and base.source == world.name
    verdict = world.judge()
    assert (verdict.status, verdict.next) == ("unhealthy", "rollback")


def test_a_candidate_worse_than_its_baseline_but_under_the_absolute_limit_is_rolled_back(world: World) -> None:
    world.serve(CAND, ok=58, e424=1, e408=1)  # 3.3%: under max_error_rate 5%
    world.serve(BASE, ok=534, e5xx=3, e424=3)  # 1.1%

    verdict = world.judge()

    assert verdict.candidate.failure_rate is not None and verdict.candidate.failure_rate < 0.05
    assert (verdict.next, verdict.final) == ("rollback", True) and "worse than the baseline" in verdict.why
    assert verdict.p_value is not None and verdict.p_value < verdict.alpha
    assert verdict.source == world.name and CAND in verdict.request and BASE in verdict.request


def test_a_candidate_as_good_as_a_4_percent_baseline_advances(world: World) -> None:
    world.serve(CAND, ok=58, e424=1, e5xx=1)  # 3.3%
    world.serve(BASE, ok=518, e424=12, e408=5, e5xx=5)  # 4.1%

    verdict = world.judge()

    assert (verdict.status, verdict.next) == ("healthy", "advance")
    assert verdict.baseline is not None and verdict.baseline.failures == 220 and verdict.baseline.served == 5400


def test_a_step_where_every_request_failed_is_rolled_back_before_min_requests(world: World) -> None:
    world.serve(CAND, minutes=1, e424=4, e408=2, e5xx=1)  # 7 requests, all failed, in the first minute
    world.serve(BASE, minutes=1, ok=540)

    verdict = world.judge(now=STARTED + world.lag + timedelta(minutes=2))  # two minutes into the step

    assert verdict.candidate.served == 7 < RULE.health.min_requests
    assert (verdict.next, verdict.final) == (
        "rollback",
        False,
    ) and "every one of its 7 request(s) failed" in verdict.why


def test_throttled_requests_are_counted_apart(world: World) -> None:
    world.serve(CAND, ok=50, throttled=10)
    world.serve(BASE, ok=540)
    cand, _ = world.read()
    counts = cand.counts()
    assert (counts.throttled, counts.failures, counts.served) == (100, 0, 500)


def test_the_window_ends_the_source_s_lag_before_now(world: World) -> None:
    world.serve(CAND, ok=60)
    cand, _ = world.read(NOW)
    lag = {"logs": timedelta(minutes=5), "metrics": timedelta(minutes=3)}[world.name]
    assert world.lag == lag and datetime.fromisoformat(cand.until) == NOW - lag
    assert cand.requests == (480 if world.name == "logs" else 600)  # the logs' last 2 minutes are not in yet


def test_a_latency_far_above_the_baseline_s_is_rolled_back(world: World) -> None:
    world.serve(CAND, ok=60, p95=120)
    world.serve(BASE, ok=540, p95=40)
    verdict = world.judge()
    assert verdict.next == "rollback" and verdict.latency_ratio == pytest.approx(3.0)


# --------------------------------------------------------------------------- the logs source


def test_each_source_gives_the_minutes_of_both_deployments_in_the_same_minutes(world: World) -> None:
    world.serve(CAND, minutes=3, ok=9, e424=1, p95=50)
    world.serve(CAND, minutes=1, start=3, ok=2, e5xx=8, p95=90)  # a minute both deployments fail in
    world.serve(BASE, minutes=3, ok=90, p95=40)
    world.serve(BASE, minutes=1, start=3, ok=30, e5xx=60, p95=80)

    cand, base = world.read()

    assert base is not None
    first = datetime.fromisoformat(cand.since)
    expected = [(first + timedelta(minutes=m)).isoformat() for m in range(4)]
    assert [datetime.fromisoformat(m.at).isoformat() for m in cand.minutes] == expected
    assert [m.at for m in base.minutes] == [m.at for m in cand.minutes]  # the same minutes, paired
    assert [m.counted() for m in cand.minutes] == [(10, 1), (10, 1), (10, 1), (10, 8)]
    assert [m.counted() for m in base.minutes] == [(90, 0), (90, 0), (90, 0), (90, 60)]
    assert [m.p95_ms for m in cand.minutes] == [50, 50, 50, 90]
    assert sum(m.counted()[0] for m in cand.minutes) == cand.counts().served == 40  # the window is their sum


def test_a_spike_both_deployments_fail_in_holds_the_step_through_either_source(world: World) -> None:
    world.serve(CAND, minutes=3, ok=60)
    world.serve(CAND, minutes=1, start=3, ok=30, e5xx=30)  # a dependency down: half of everything fails
    world.serve(BASE, minutes=3, ok=535, e5xx=5)
    world.serve(BASE, minutes=1, start=3, ok=270, e5xx=270)

    verdict = world.judge(STARTED + timedelta(minutes=4) + world.lag)  # mid-bake, the spike the latest minute

    assert (verdict.status, verdict.next) == ("endpoint_failing", "hold")
    assert "baseline 270 failure(s) of 540" in verdict.why and "the endpoint's problem" in verdict.why
    assert verdict.minutes[-1][1:] == (60, 30, 540, 270, "shared")  # the minute the record keeps


def test_two_failures_at_a_few_requests_a_minute_do_not_roll_back_through_either_source(world: World) -> None:
    world.serve(CAND, minutes=8, ok=2)
    world.serve(CAND, minutes=2, start=8, ok=1, e424=1)  # 2 of 20 failed: 10%, twice max_error_rate
    world.serve(BASE, minutes=10, ok=18)

    verdict = world.judge()

    assert verdict.candidate.failures == 2 and verdict.final
    assert verdict.next != "rollback", verdict.why


def test_each_source_reads_the_baseline_s_hour_before_the_rollout_as_its_history(world: World) -> None:
    world.serve(BASE, minutes=60, start=-60, ok=588, e5xx=12)  # the hour before: the baseline alone, 2%
    world.serve(CAND, minutes=5, start=-5, ok=5, e424=5)  # the candidate's requests before the step (a mirror)
    world.serve(CAND, ok=59, e5xx=1)
    world.serve(BASE, ok=537, e5xx=3)
    since, until = analysis.window(RULE.health, STARTED, STARTED + RULE.bake + world.lag, world.name)

    cand, base = world.source.read(ENDPOINT, CAND, BASE, since, until, before=since - timedelta(hours=1))

    assert base is not None and len(base.history) == 60
    assert {m.counted() for m in base.history} == {(600, 12)} and base.history[-1].at < base.minutes[0].at
    assert (base.counts().served, base.counts().failures) == (5400, 30)  # the window's counts are the window's
    assert cand.history == () and (cand.counts().served, cand.counts().failures) == (600, 10)  # not its earlier ones
    verdict = analysis.judge(RULE, cand, base, until - since)
    assert verdict.comparison is not None and verdict.comparison["reference"] == 70  # 60 before, 10 in the step
    assert verdict.comparison["calm"] == pytest.approx((720 + 30) / (36000 + 5400))
    assert "the baseline's 60 minute(s) before the rollout (720 failure(s) of 36000)" in (verdict.note or "")
    assert world.source.read(ENDPOINT, CAND, BASE, since, until)[1].history == ()  # none unless asked  # type: ignore[union-attr]


def test_the_logs_source_sends_one_query_for_both_deployments() -> None:
    world = LogsWorld()
    world.serve(CAND, ok=60)
    world.read()
    [call] = world.fake.calls
    assert call.body["query"] == build_query(ENDPOINT, CAND, BASE)
    assert 'let baseline_name = "blue";' in call.body["query"] and call.path == f"/v1/workspaces/{LOGS_WORKSPACE}/query"


def test_the_logs_source_reads_the_baseline_s_history_in_the_same_query() -> None:
    world = LogsWorld()
    world.serve(CAND, ok=60)
    since, until = analysis.window(RULE.health, STARTED, NOW, world.name)
    world.source.read(ENDPOINT, CAND, BASE, since, until, before=since - timedelta(hours=1))
    [call] = world.fake.calls
    assert call.body["query"] == build_query(ENDPOINT, CAND, BASE, since)
    assert "let window_start = datetime(2026-12-02T09:47:00.000000Z);" in call.body["query"]
    assert call.body["timespan"].startswith("2026-12-02T08:47:00")  # the hour before the window


def test_the_logs_query_refuses_a_baseline_name_azure_would_not_accept() -> None:
    with pytest.raises(PermanentError, match="not an Azure ML online deployment name"):
        build_query(ENDPOINT, CAND, 'x" or 1==1 //')


def test_the_fake_logs_refuse_a_query_it_does_not_know() -> None:
    world = LogsWorld()
    assert isinstance(world.source, MonitorHealth)
    query = build_query(ENDPOINT, CAND).replace("toint(ModelStatusCode)", "ModelStatusCode")
    with pytest.raises(HttpResponseError, match="a query the fake does not know"):
        world.source.client.query_workspace(LOGS_WORKSPACE, query, timespan=(STARTED, NOW))
    assert world.fake.unexpected == [f"POST /v1/workspaces/{LOGS_WORKSPACE}/query: a query the fake does not know"]


def test_without_a_workspace_no_health_data_reads_empty_and_says_why() -> None:
    cand, base = NoHealthData().read(ENDPOINT, CAND, BASE, STARTED, NOW)
    assert (cand.requests, cand.source, base is not None and base.requests) == (0, "none", 0)
    assert "RETRAIN_LOG_ANALYTICS_WORKSPACE_ID" in str(cand.note)


# --------------------------------------------------------------------------- the metrics source


def test_the_metrics_source_asks_the_batch_api_for_the_endpoint_split_by_deployment_and_code() -> None:
    world = MetricsWorld()
    world.serve(CAND, ok=60)
    world.read()
    counts, latency = world.fake.calls
    assert counts.path == f"/subscriptions/{SUB}/metrics:getBatch" and counts.body == {"resourceids": [world.rid]}
    assert counts.query["metricnames"] == "RequestsPerMinute" and counts.query["aggregation"] == "Average"
    assert counts.query["filter"] == deployment_filter(CAND, BASE, "statusCode", "modelStatusCode")
    assert latency.query["metricnames"] == "RequestLatency_P95" and latency.query["filter"] == deployment_filter(
        CAND, BASE
    )
    assert (counts.query["interval"], counts.query["top"], counts.query["api-version"]) == ("PT1M", "500", "2024-02-01")
    assert (counts.query["starttime"], counts.query["endtime"]) == (
        "2026-12-02T09:47:00.000Z",
        "2026-12-02T09:57:00.000Z",
    )


def test_the_metrics_window_keeps_whole_minutes_only() -> None:
    world = MetricsWorld()
    world.serve(CAND, ok=60)
    cand, _ = world.source.read(ENDPOINT, CAND, None, STARTED + timedelta(seconds=20), NOW - timedelta(seconds=150))
    assert (cand.since, cand.until) == ("2026-12-02T09:48:00.000Z", "2026-12-02T09:57:00.000Z")
    assert cand.requests == 540  # the minute that began before the window is left out
    empty, _ = world.source.read(ENDPOINT, CAND, None, NOW - timedelta(seconds=50), NOW - timedelta(seconds=10))
    assert empty.requests == 0 and "holds no whole minute yet" in str(empty.note) and len(world.fake.calls) == 2


def test_the_fake_metrics_api_refuses_an_or_across_dimensions_and_unknown_dimensions() -> None:
    world = MetricsWorld()
    assert isinstance(world.source, MonitorMetrics)
    client = world.source.client
    for flt in ("deployment eq 'a' or statusCode eq '500'", "instanceId eq '*'"):
        with pytest.raises(HttpResponseError, match="BadRequest"):
            client.query_resources(
                resource_ids=[world.rid],
                metric_namespace="Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
                metric_names=["RequestsPerMinute"],
                timespan=(STARTED, NOW),
                granularity=timedelta(minutes=1),
                aggregations=["Average"],
                filter=flt,
            )
    assert (
        len(world.fake.unexpected) == 2 and "cannot separate two different metadata names" in world.fake.unexpected[0]
    )
    assert "does not support requested dimension combination" in world.fake.unexpected[1]
    world.fake.unexpected.clear()


def test_without_top_the_metrics_api_returns_ten_series() -> None:
    world = MetricsWorld()
    for code in range(12):
        world.fake.serve(world.rid, STARTED, f"d{code}", ok=1)
    assert isinstance(world.source, MonitorMetrics)
    [result] = world.source.client.query_resources(
        resource_ids=[world.rid],
        metric_namespace="Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
        metric_names=["RequestsPerMinute"],
        timespan=(STARTED, NOW),
        granularity=timedelta(minutes=1),
        filter="deployment eq '*'",
    )
    assert len(result.metrics[0].timeseries) == 10


def test_throttling_is_retried_then_transient() -> None:
    world = MetricsWorld()
    world.serve(CAND, ok=60)
    assert isinstance(world.fake, FakeMetrics)
    world.fake.fail(429, times=1, headers={"Retry-After": "2"})
    world.fake.throttle(1)  # 529: the metrics backend's throttling answer (the batch API's docs)
    cand, _ = world.read()  # both retried inside the budget
    assert cand.requests == 600 and [c.status for c in world.fake.calls[-4:]] == [429, 529, 200, 200]
    world.fake.fail(503, times=1000)
    with pytest.raises(TransientError, match="budget"):
        world.read()
    world.fake.faults.clear()


def test_the_regional_endpoint_is_derived_from_the_region() -> None:
    assert regional_endpoint("West Europe") == "https://westeurope.metrics.monitor.azure.com"
    with pytest.raises(ValueError, match="not an Azure region name"):
        regional_endpoint("west-europe!")
    with pytest.raises(ValueError, match="needs the region"):
        MonitorMetrics.build(subscription=SUB, resource_group=RG, workspace=WS, credential=FakeCredential())


def test_the_metrics_source_loads_the_sdk_only_when_it_reads() -> None:
    code = (
        "import json, sys\n"
        "from function_app.adapters.clients import SharedCredential\n"
        "from function_app.adapters.monitor_metrics import MonitorMetrics\n"
        "m = MonitorMetrics.build(\n"
        "    subscription='s', resource_group='r', workspace='w', region='westeurope', credential=SharedCredential(None)\n"
        ")\n"
        "print(json.dumps([m.name, 'azure.monitor.querymetrics' in sys.modules, 'azure.identity' in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, env=dict(os.environ)
    )
    assert out.stdout.strip().splitlines()[-1] == '["metrics", false, false]'


# --------------------------------------------------------------------------- the batch API's rules


def test_monitoring_reader_on_the_workspace_is_refused_and_on_the_subscription_it_reads() -> None:
    """metrics:getBatch is a subscription-level API: the role on the workspace (inherited by every
    endpoint) is answered 401, and the error says which role to grant where."""
    on_workspace = MetricsWorld(principal=APP.moved("Monitoring Reader", WORKSPACE_ID))
    on_workspace.serve(CAND, ok=60)
    with pytest.raises(
        PermanentError, match=rf"HTTP 401.*Monitoring Reader \({MONITORING_READER}\) on the subscription {SUB}"
    ):
        on_workspace.read()
    assert [c.status for c in on_workspace.fake.calls] == [401]  # not retried: no retry mends a role

    on_subscription = MetricsWorld(principal=APP)
    on_subscription.serve(CAND, ok=60)
    cand, _ = on_subscription.read()
    assert cand.requests == 600 and [c.status for c in on_subscription.fake.calls] == [200, 200]


def test_a_role_assignment_applies_at_its_scope_and_below_only() -> None:
    grants = APP.moved("Monitoring Reader", WORKSPACE_ID)
    assert grants.allows("Microsoft.Insights/metrics/read", f"{WORKSPACE_ID}/onlineEndpoints/{ENDPOINT}")
    assert not grants.allows("Microsoft.Insights/metrics/read", f"/subscriptions/{SUB}")
    assert not grants.allows("Microsoft.Insights/metrics/read", f"{WORKSPACE_ID}-2")  # a sibling is not below
    assert not grants.allows("Microsoft.Insights/alertRules/write", WORKSPACE_ID)  # a reader writes nothing


def test_an_unregistered_insights_provider_is_a_403_that_says_to_register_it() -> None:
    world = MetricsWorld()
    assert isinstance(world.fake, FakeMetrics)
    world.fake.provider_registered = False
    with pytest.raises(
        PermanentError, match=rf"HTTP 403.*az provider register --namespace Microsoft.Insights --subscription {SUB}"
    ):
        world.read()


def test_the_batch_api_serves_only_the_aggregations_documented_for_each_metric() -> None:
    world = MetricsWorld()
    world.serve(CAND, ok=60)
    assert isinstance(world.source, MonitorMetrics) and isinstance(world.fake, FakeMetrics)
    for metric in ("RequestsPerMinute", "RequestLatency_P95"):
        with pytest.raises(HttpResponseError, match="Sampling type is not found") as refused:
            world.source.client.query_resources(
                resource_ids=[world.rid],
                metric_namespace="Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
                metric_names=[metric],
                timespan=(STARTED, NOW),
                granularity=timedelta(minutes=1),
                aggregations=["Total"],
            )
        assert refused.value.status_code == 501
    assert len(world.fake.unexpected) == 2
    world.fake.unexpected.clear()


def test_the_requests_of_a_window_are_the_sum_of_its_minutes_averages() -> None:
    world = MetricsWorld()
    for minute, ok in enumerate((10, 20, 30)):
        assert isinstance(world.fake, FakeMetrics)
        world.fake.serve(world.rid, STARTED + timedelta(minutes=minute), CAND, ok=ok, model_errors=minute)
    cand, _ = world.source.read(ENDPOINT, CAND, None, STARTED, STARTED + timedelta(minutes=3))
    assert cand.requests == 63 and cand.counts().failures == 3


def test_an_unsupported_aggregation_is_a_permanent_error_not_retried() -> None:
    world = MetricsWorld()
    assert isinstance(world.fake, FakeMetrics)
    world.fake.fail(501, times=1)
    with pytest.raises(PermanentError, match="does not serve RequestsPerMinute with aggregation Average"):
        world.read()
    assert len(world.fake.calls) == 1


def test_asked_in_another_region_than_the_endpoints_the_batch_api_answers_empty_series() -> None:
    """The batch API does not check the host's region: resources of another region read as no
    data, which a rollout would take for no traffic. So the region must be the workspace's."""
    world = MetricsWorld(region="swedencentral")  # the function app's region, not the workspace's
    world.serve(CAND, ok=60)
    cand, _ = world.read()
    assert cand.requests == 0 and all(c.status == 200 for c in world.fake.calls)
    assert world.fake.wrong_region == ["swedencentral.metrics.monitor.azure.com: resources in westeurope"] * 2


def test_the_batch_api_takes_at_most_50_resources_of_one_subscription() -> None:
    world = MetricsWorld()
    assert isinstance(world.source, MonitorMetrics) and isinstance(world.fake, FakeMetrics)
    other = endpoint_resource_id("00000000-0000-0000-0000-000000000000", RG, WS, ENDPOINT)
    many = [endpoint_resource_id(SUB, RG, WS, f"ep-{i}") for i in range(51)]
    for ids in (many, [world.rid, other]):
        with pytest.raises(HttpResponseError, match="BadRequest"):
            world.source.client.query_resources(
                resource_ids=ids,
                metric_namespace="Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
                metric_names=["RequestsPerMinute"],
                timespan=(STARTED, NOW),
                granularity=timedelta(minutes=1),
                aggregations=["Average"],
            )
    assert (
        "at most 50" in world.fake.unexpected[0]
        and "not an online endpoint of subscription" in world.fake.unexpected[1]
    )
    world.fake.unexpected.clear()


def test_the_metrics_region_infra_sets_is_the_workspace_s_not_the_app_s() -> None:
    from tests.azure_world import APP_REGION, REGION, infra_metrics_region

    assert infra_metrics_region() == REGION != APP_REGION
    with pytest.raises(ValueError, match="workspace's region"):
        MonitorMetrics.build(subscription=SUB, resource_group=RG, workspace=WS, region="", credential=FakeCredential())
