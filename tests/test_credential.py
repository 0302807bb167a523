"""One credential per worker: every adapter a build makes is given the same one, and nothing of
azure-identity is imported until a client asks for its first token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import azure.identity
import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo

from function_app.adapters.clients import SharedCredential
from tests.azure_world import RG, SUB, WS
from tests.conftest import REPO
from tests.fake_http import FakeCredential

# Run in a process of its own, so that what is imported is what the build imported. Every adapter
# that authenticates is configured: the Azure ML backend (and its MLflow reader), both health
# sources and the notification topic; the ledger is SQLite (a Table ledger reaches its account as
# it is built).
BUILD_AND_LOOK = """
import gc, json, sys
from function_app.adapters.azureml.client import AzureMLClient
from function_app.adapters.clients import SharedCredential
from function_app.adapters.mlflow_metrics import MlflowRuns
from function_app.adapters.monitor_health import MonitorHealth
from function_app.adapters.monitor_metrics import MonitorMetrics
from function_app.adapters.notifier import EventGridNotifier
from function_app.runtime import build
from function_app.settings import Settings

def reaches(obj, target, seen):
    '''Whether ``target`` is reachable from ``obj``: through attributes, containers, bound methods
    and the cells of closures (a client built on first use holds its credential in one).'''
    if obj is target:
        return True
    if id(obj) in seen or isinstance(obj, (str, bytes, int, float, type(None), type)):
        return False
    seen.add(id(obj))
    if isinstance(obj, dict):
        nxt = list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        nxt = list(obj)
    else:
        nxt = list(getattr(obj, "__dict__", {}).values())
        nxt += [c.cell_contents for c in getattr(obj, "__closure__", None) or () if c.cell_contents is not None]
        nxt += [getattr(obj, a) for a in ("__self__", "__func__") if hasattr(obj, a)]
    return any(reaches(o, target, seen) for o in nxt)

worker = build(Settings.from_env())
credentials = [o for o in gc.get_objects() if isinstance(o, SharedCredential)]
kinds = (AzureMLClient, MlflowRuns, MonitorHealth, MonitorMetrics, EventGridNotifier)
adapters = [o for o in gc.get_objects() if isinstance(o, kinds)]
given = sorted(type(a).__name__ for a in adapters if len(credentials) == 1 and reaches(a, credentials[0], set()))
loaded = [m for m in ("azure.identity", "azure.ai.ml") if m in sys.modules]
print(json.dumps([len(credentials), sorted(type(a).__name__ for a in adapters), given, loaded]))
"""


def test_one_build_gives_every_adapter_the_same_credential_and_imports_no_identity_library(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RETRAIN_SQLITE_PATH": str(tmp_path / "ledger.db"),
        "RETRAIN_BACKEND": "azureml",
        "AZUREML_SUBSCRIPTION_ID": SUB,
        "AZUREML_RESOURCE_GROUP": RG,
        "AZUREML_WORKSPACE_NAME": WS,
        "AZURE_CLIENT_ID": "00000000-0000-0000-0000-00000000c1d0",
        "RETRAIN_METRICS_REGION": "westeurope",
        "RETRAIN_LOG_ANALYTICS_WORKSPACE_ID": "00000000-0000-0000-0000-000000000abc",
        "RETRAIN_NOTIFY_TOPIC_ENDPOINT": "https://topic.westeurope-1.eventgrid.azure.net/api/events",
        "RETRAIN_NOTIFY_TOPIC_KEY": "",
    }
    out = subprocess.run(
        [sys.executable, "-c", BUILD_AND_LOOK], cwd=REPO, capture_output=True, text=True, check=True, env=env
    )
    every = ["AzureMLClient", "EventGridNotifier", "MlflowRuns", "MonitorHealth", "MonitorMetrics"]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [1, every, every, []]


class _Counted:
    """Stands in for azure-identity's DefaultAzureCredential: records how it was built, gives tokens."""

    built: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        _Counted.built.append(kwargs)
        self.fake = FakeCredential()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self.fake.get_token(*scopes, **kwargs)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        token = self.fake.get_token(*scopes)
        return AccessTokenInfo(token.token, token.expires_on)


def test_the_shared_credential_is_built_on_the_first_token_once_with_the_client_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _Counted.built = []
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", _Counted)
    credential = SharedCredential("client-1")
    assert _Counted.built == []
    first = credential.get_token("https://management.azure.com/.default")
    again = credential.get_token_info("https://monitor.azure.com/.default")
    assert first.token and again.token
    assert _Counted.built == [{"managed_identity_client_id": "client-1"}]


def test_the_telemetry_exporter_authenticates_with_the_workers_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    """With Entra authentication for Application Insights, the exporter is given the process's one
    credential, the very object every worker's adapters get (one identity, one token cache), not a
    credential of its own."""
    import azure.monitor.opentelemetry

    from function_app import runtime, telemetry
    from function_app.settings import Settings

    given: dict[str, Any] = {}
    monkeypatch.setattr(azure.monitor.opentelemetry, "configure_azure_monitor", lambda **kw: given.update(kw))
    monkeypatch.setattr(telemetry, "_state", None)
    monkeypatch.setattr(telemetry, "_off", False)
    monkeypatch.setenv(telemetry.CONNECTION, "InstrumentationKey=00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv(telemetry.AUTHENTICATION, "Authorization=AAD")
    monkeypatch.setenv("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555")

    assert telemetry._configure() is not None

    worker_credential = runtime.make_credential(Settings.from_env())
    assert isinstance(given["credential"], SharedCredential)
    assert given["credential"] is worker_credential
    assert worker_credential.client_id == "11111111-2222-3333-4444-555555555555"
