"""The metrics batch API's rules (``metrics:getBatch``, as Azure Monitor documents them), met through the
real ``MetricsClient`` and the metrics source: the role on the subscription, the provider's
registration, the aggregations each metric lists, the region and the 50 resources of one call."""

from __future__ import annotations

from datetime import timedelta

import pytest
from azure.core.exceptions import HttpResponseError

from function_app.adapters.monitor_metrics import MonitorMetrics, endpoint_resource_id
from handlers.errors import PermanentError
from tests.fake_http import FakeCredential
from tests.fake_metrics import MONITORING_READER, FakeMetrics
from tests.health_world import APP, CAND, ENDPOINT, NOW, RG, STARTED, SUB, WORKSPACE_ID, WS, MetricsWorld


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
