"""The logs health source (``RETRAIN_HEALTH_SOURCE=logs``): the real ``LogsQueryClient`` against the fake
Log Analytics API, its one query for both deployments and the baseline's history, and what it says
without a workspace."""

from __future__ import annotations

from datetime import timedelta

import pytest
from azure.core.exceptions import HttpResponseError

from function_app.adapters.monitor_health import MonitorHealth, NoHealthData, build_query
from handlers import analysis
from handlers.errors import PermanentError
from tests.health_world import BASE, CAND, ENDPOINT, LOGS_WORKSPACE, NOW, RULE, STARTED, LogsWorld


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
