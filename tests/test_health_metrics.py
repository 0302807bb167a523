"""The metrics health source (``RETRAIN_HEALTH_SOURCE=metrics``, the default): the real ``MetricsClient``
against the fake metrics batch API, what it asks for, its window, its retries, its regional endpoint,
and that it loads the SDK only when it reads."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from azure.core.exceptions import HttpResponseError

from function_app.adapters.monitor_metrics import MonitorMetrics, deployment_filter, regional_endpoint
from handlers.errors import TransientError
from tests.conftest import REPO
from tests.fake_http import FakeCredential
from tests.fake_metrics import FakeMetrics
from tests.health_world import BASE, CAND, ENDPOINT, NOW, RG, STARTED, SUB, WS, MetricsWorld


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
