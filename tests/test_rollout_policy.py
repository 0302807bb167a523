"""Rollout choices of the policy, and the health adapter's edges: with the recording Actions fake
on SQLite, and the real ``LogsQueryClient`` against the fake Log Analytics API."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from function_app.adapters.monitor_health import MonitorHealth, NoHealthData, build_query, kql_string
from function_app.retry import RetryPolicy
from function_app.runtime import make_credential, make_health
from function_app.settings import Settings
from handlers import guards
from handlers.errors import PermanentError, TransientError
from handlers.policy_file import parse_policy
from handlers.signals import ManualRequest, Trigger
from tests.conftest import REPO
from tests.fake_arm_common import FakeClock
from tests.fake_http import FakeCredential
from tests.fake_logs import FakeLogs
from tests.fakes import Clock, RecordingActions
from tests.ledgers import LedgerSpec
from tests.world import World as BaseWorld

MODEL = "churn"
ENDPOINT = "churn-endpoint"


def policy(on_no_traffic: str) -> Any:
    return parse_policy(
        f"""
models:
  {MODEL}:
    deploy:
      endpoint: {ENDPOINT}
      rollout:
        steps: [25, 100]
        bake: 5m
        health: {{on_no_traffic: {on_no_traffic}, max_bake: 5m}}
"""
    )


class World:
    def __init__(self, spec: LedgerSpec, on_no_traffic: str) -> None:
        self.clock = Clock()
        self.actions = RecordingActions(traffic={ENDPOINT: {"blue": 100}})
        self.world = BaseWorld(
            spec,
            policy=policy(on_no_traffic),
            actions=self.actions,
            clock=self.clock,
            health={"metrics": NoHealthData()},
        )
        self.service = self.world.service
        request = ManualRequest(Trigger("http", "req-1", "ManualRequest.deploy"), MODEL, "deploy", "ops", version="4")
        self.deploy = self.service.manual(request)
        assert self.deploy.outcome == "submitted"
        self.name = str(self.deploy.details["rendered"]["deployment"])
        self.actions.provisioning[f"{ENDPOINT}/{self.name}"] = "Succeeded"

    def state(self) -> str:
        [entry] = self.world.reconcile().rollouts
        return str(entry["state"])

    def flights(self) -> dict[str, Any]:
        return dict(self.service.ledger.get_model(MODEL).flights)


def test_on_no_traffic_hold_keeps_the_step_and_records_it_once(ledger_spec: LedgerSpec) -> None:
    world = World(ledger_spec, "hold")
    assert world.state() == "stepped"
    world.clock.advance(minutes=5)
    assert world.state() == "baking"  # the window ends the metrics' lag (3m) before now: 2m of a 5m bake
    world.clock.advance(minutes=3)
    assert world.state() == "held"
    world.clock.advance(minutes=5)
    assert world.state() == "held"

    held = [r for r in world.service.ledger.decisions(MODEL, 50) if r.id.startswith("rh-")]
    assert len(held) == 1 and held[0].outcome == "skipped"
    assert "no Log Analytics workspace is configured" in held[0].reason  # what the unconfigured source said
    assert world.actions.traffic_sets == [(ENDPOINT, {"blue": 75, world.name: 25})]
    assert guards.ROLLOUT in world.flights()


def test_on_no_traffic_promote_goes_on_unverified_and_says_so(ledger_spec: LedgerSpec) -> None:
    world = World(ledger_spec, "promote")
    world.state()
    world.clock.advance(minutes=8)  # the bake and the metrics' lag
    assert world.state() == "stepped"
    world.clock.advance(minutes=8)
    assert world.state() == "promoted"

    assert world.actions.traffic_sets == [
        (ENDPOINT, {"blue": 75, world.name: 25}),
        (ENDPOINT, {world.name: 100}),
    ]
    [promote] = [r for r in world.service.ledger.decisions(MODEL, 50) if r.action == "promote"]
    assert "on_no_traffic is promote" in promote.reason and world.flights() == {}


def test_traffic_that_azure_refuses_turns_the_step_into_a_rollback(ledger_spec: LedgerSpec) -> None:
    world = World(ledger_spec, "rollback")
    world.actions.traffic_error = PermanentError("setting the traffic: the service answered 400: no such deployment")

    report = world.world.reconcile()

    [entry] = report.rollouts
    assert entry["state"] == "rollback_failed"  # the rollback's own traffic was refused too
    [rec] = [r for r in world.service.ledger.decisions(MODEL, 50) if r.action == "rollback"]
    assert rec.outcome == "failed" and "set the traffic by hand" in rec.reason
    assert "was refused" in rec.reason and world.flights() == {}


def test_a_refused_step_whose_rollback_goes_through_restores_the_original(ledger_spec: LedgerSpec) -> None:
    world = World(ledger_spec, "rollback")
    calls: list[dict[str, int]] = []
    real = world.actions.set_traffic

    def refuse_the_canary(endpoint: str, traffic: dict[str, int]) -> bool:
        calls.append(traffic)
        if world.name in traffic:
            raise PermanentError("the service answered 400")
        return real(endpoint, traffic)

    world.actions.set_traffic = refuse_the_canary  # type: ignore[method-assign]
    assert world.state() == "rolled_back"
    assert calls == [{"blue": 75, world.name: 25}, {"blue": 100}] and world.flights() == {}


def test_a_deployment_still_being_created_is_waited_for(ledger_spec: LedgerSpec) -> None:
    world = World(ledger_spec, "rollback")
    world.actions.provisioning[f"{ENDPOINT}/{world.name}"] = "Creating"
    assert world.state() == "provisioning"
    assert world.actions.traffic_sets == [] and world.flights()[guards.ROLLOUT].data == {}


# --------------------------------------------------------------------------- the health adapter

WORKSPACE_GUID = "5b1f3b5e-0000-4c55-9c3b-4a3f2d1e0c9b"


def health(logs: FakeLogs, workspace: str) -> MonitorHealth:
    settings = Settings.from_env({"RETRAIN_LOG_ANALYTICS_WORKSPACE_ID": workspace})
    clock = FakeClock()
    retry = RetryPolicy.from_settings(settings, sleep=clock.sleep, clock=clock)
    return MonitorHealth.from_settings(settings, credential=FakeCredential(), retry=retry, transport=logs)


def test_a_workspace_guid_is_queried_with_query_workspace() -> None:
    logs = FakeLogs(WORKSPACE_GUID)
    clock = Clock()
    logs.serve(clock.now, ENDPOINT, "cand-1", ok=30, errors=3, ms=70)
    logs.serve(clock.now, ENDPOINT, "blue", ok=500)  # the champion's traffic is not the candidate's
    since, until = clock.now - timedelta(minutes=10), clock.now + timedelta(minutes=1)

    got, _ = health(logs, WORKSPACE_GUID).read(ENDPOINT, "cand-1", None, since, until)

    assert (got.requests, got.counts().failures, got.p95_ms, got.source) == (33, 3, 70.0, "logs")
    assert [c.path for c in logs.calls] == [f"/v1/workspaces/{WORKSPACE_GUID}/query"] and logs.unexpected == []


def test_names_go_into_the_query_as_validated_quoted_literals() -> None:
    query = build_query("churn-endpoint", "cand-1")
    assert 'let endpoint_name = "churn-endpoint";' in query and "DeploymentName =~ deployment_name" in query
    assert kql_string('a"b\\c') == '"a\\"b\\\\c"'
    with pytest.raises(PermanentError, match="not an Azure ML online deployment name"):
        build_query("churn-endpoint", 'x" or 1==1 //')


def test_a_refusal_is_permanent_and_a_partial_result_transient() -> None:
    logs = FakeLogs(WORKSPACE_GUID)
    probe = health(logs, WORKSPACE_GUID)
    now = Clock().now
    logs.fail(403)
    with pytest.raises(
        PermanentError, match=r"HTTP 403.*grant the function app's managed identity Log Analytics Reader"
    ):
        probe.read(ENDPOINT, "cand-1", None, now - timedelta(minutes=5), now)
    logs.partial = True
    with pytest.raises(TransientError, match="partial result"):
        probe.read(ENDPOINT, "cand-1", None, now - timedelta(minutes=5), now)


def test_a_workspace_setting_that_is_neither_a_guid_nor_a_resource_id_is_refused() -> None:
    with pytest.raises(ValueError, match="RETRAIN_LOG_ANALYTICS_WORKSPACE_ID='log-retrain'"):
        health(FakeLogs("x"), "log-retrain")


def test_without_a_workspace_the_reading_is_no_data_and_says_why() -> None:
    now = Clock().now
    got, _ = NoHealthData().read(ENDPOINT, "cand-1", None, now - timedelta(minutes=5), now)
    assert (got.requests, got.source) == (0, "none") and "RETRAIN_LOG_ANALYTICS_WORKSPACE_ID" in str(got.note)


def test_the_health_sources_load_their_sdks_only_when_they_read(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from function_app.runtime import make_credential, make_health\n"
        "from function_app.settings import Settings\n"
        "settings = Settings.from_env()\n"
        "h = make_health(settings, make_credential(settings))\n"
        "loaded = [m for m in ('azure.monitor.query', 'azure.monitor.querymetrics', 'azure.identity') if m in sys.modules]\n"
        "print(json.dumps([{k: v.name for k, v in h.items()}, loaded]))\n"
    )
    env = {**os.environ, "RETRAIN_LOG_ANALYTICS_WORKSPACE_ID": WORKSPACE_GUID, "RETRAIN_METRICS_REGION": "westeurope"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == '[{"metrics": "metrics", "logs": "logs"}, []]'


def test_a_source_that_is_not_configured_reads_no_data_and_says_which_setting_is_missing() -> None:
    settings = Settings.from_env({"RETRAIN_METRICS_REGION": "", "RETRAIN_LOG_ANALYTICS_WORKSPACE_ID": ""})
    sources = make_health(settings, make_credential(settings))
    now = Clock().now
    for name, setting in (("metrics", "RETRAIN_METRICS_REGION"), ("logs", "RETRAIN_LOG_ANALYTICS_WORKSPACE_ID")):
        assert isinstance(sources[name], NoHealthData)
        got, _ = sources[name].read(ENDPOINT, "cand-1", None, now - timedelta(minutes=5), now)
        assert got.requests == 0 and setting in str(got.note)


def test_a_metrics_region_or_endpoint_that_cannot_be_one_is_refused_at_start_up() -> None:
    with pytest.raises(
        ValueError, match=r"(?s)RETRAIN_METRICS_REGION=.west-europe!.*RETRAIN_METRICS_ENDPOINT=.ftp://x."
    ):
        Settings.from_env({"RETRAIN_METRICS_REGION": "west-europe!", "RETRAIN_METRICS_ENDPOINT": "ftp://x"})
    assert Settings.from_env({"RETRAIN_METRICS_REGION": "West Europe"}).metrics_region == "West Europe"
