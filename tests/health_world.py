"""The health sources' test world: one source (the real ``LogsQueryClient`` against the fake Log Analytics
API, or the real ``MetricsClient`` against the fake metrics batch API) read through its adapter, with a
deployment's requests spread over a rollout step's minutes; shared by tests/test_health_scenarios.py,
test_health_logs.py, test_health_metrics.py and test_metrics_batch_api.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from function_app.adapters.monitor_health import MonitorHealth
from function_app.adapters.monitor_metrics import MonitorMetrics, endpoint_resource_id
from function_app.retry import RetryPolicy
from function_app.settings import Settings
from handlers import analysis
from handlers.analysis import HealthSource, Reading
from handlers.rollout_rules import RolloutRule
from tests import rbac, rbac_model
from tests.fake_arm_common import FakeClock
from tests.fake_http import FakeCredential
from tests.fake_logs import FakeLogs
from tests.fake_metrics import FakeMetrics

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

    def __init__(self, region: str = "West Europe", principal: rbac_model.Principal | None = None) -> None:
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
