"""The metrics source's history leg within what the metrics batch API takes: up to 24 hours of one-minute
points for the baseline's history (``deploy.rollout.health.history``) are asked in spans of at most six
hours (:data:`function_app.adapters.monitor_metrics.SPAN`). The API documents no cap on a request's points
and has no paging (Azure Monitor docs, "Migrate from the metrics API to the getBatch API": split a large
volume into several queries; docs/azure-behaviour.md), so whatever cap Azure keeps unsaid, a read asks for
no more than a span's points: the fake is given that cap here, and the reading is the one a single call gives.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from function_app.adapters import monitor_metrics
from function_app.adapters.monitor_metrics import SPAN, MonitorMetrics, endpoint_resource_id
from function_app.retry import RetryPolicy
from function_app.settings import Settings
from handlers.analysis import Reading
from tests import rbac
from tests.fake_arm_common import FakeClock
from tests.fake_http import FakeCredential
from tests.fake_metrics import FakeMetrics

SUB, RG, WS = "7a3c5f0e-2222-4d2b-9e8a-2b6f1c0d9e77", "rg-mlops", "ws-retrain"
ENDPOINT, CAND, BASE = "churn-endpoint", "churn-cand", "blue"
STEP = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)  # the step began; its window is the 10 minutes after it
DAY = timedelta(hours=24)


def _source() -> tuple[FakeMetrics, MonitorMetrics]:
    fake = FakeMetrics(SUB, region="westeurope", principal=rbac.app(SUB, RG, WS))
    settings = Settings.from_env(
        {"AZUREML_SUBSCRIPTION_ID": SUB, "AZUREML_RESOURCE_GROUP": RG, "AZUREML_WORKSPACE_NAME": WS}
    )
    clock = FakeClock()
    source = MonitorMetrics.from_settings(
        settings,
        region="West Europe",
        credential=FakeCredential(),
        retry=RetryPolicy(sleep=clock.sleep, clock=clock),
        transport=fake,
    )
    rid = endpoint_resource_id(SUB, RG, WS, ENDPOINT)
    for m in range(-24 * 60, 10):  # the baseline all day, 2% failing; the candidate in the step only
        fake.serve(rid, STEP + timedelta(minutes=m), BASE, ok=98, errors=2)
        if m >= 0:
            fake.serve(rid, STEP + timedelta(minutes=m), CAND, ok=9, errors=1)
    return fake, source


def _read(source: MonitorMetrics) -> tuple[Reading, Reading]:
    cand, base = source.read(ENDPOINT, CAND, BASE, STEP, STEP + timedelta(minutes=10), before=STEP - DAY)
    assert base is not None
    return cand, base


def test_a_day_of_the_baseline_s_history_is_asked_in_spans_the_api_takes_and_reads_as_one_call_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, source = _source()
    fake.max_points = int(SPAN / timedelta(minutes=1))  # a cap no request may pass (Azure documents none)
    cand, base = _read(source)
    assert fake.unexpected == [] and len(fake.calls) == 5 + 1  # 24h10m of counts in 5 spans, the window's p95
    spans = [
        (c.query["starttime"], c.query["endtime"]) for c in fake.calls if c.query["metricnames"] == "RequestsPerMinute"
    ]
    assert spans[0][0] == "2026-12-01T10:00:00.000Z" and spans[-1][1] == "2026-12-02T10:10:00.000Z"
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # back to back: no minute twice, none lost
    assert len(base.history) == 24 * 60 and {m.counted() for m in base.history} == {(100, 2)}
    assert base.counts().served == 1000 and cand.counts().served == 100

    monkeypatch.setattr(monitor_metrics, "SPAN", 2 * DAY)  # the same traffic asked in one call, no cap
    whole, whole_source = _source()
    one_cand, one_base = _read(whole_source)
    assert len(whole.calls) == 2
    assert one_base.history == base.history and one_base.minutes == base.minutes
    assert one_cand.minutes == cand.minutes
