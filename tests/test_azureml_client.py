"""The Azure ML backend's client and identity: built once, on first use, the SDKs loaded only when it
acts; a wrong identity or a role not yet propagated. As in
tests/test_azureml_actions.py, the real SDK talks to the fake ARM and no test waits."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import azure.core.exceptions as core_exceptions
import pytest

from function_app.adapters.azureml import AzureMLActions
from handlers.errors import TransientError
from tests.azure_world import (
    DRIFT_SAMPLE,
    RG,
    SUB,
    WS,
    AzureWorld,
    in_workspace,
)
from tests.conftest import REPO
from tests.fake_http import FakeCredential


def test_the_client_is_built_on_first_use_and_only_once(azure: AzureWorld) -> None:
    builds: list[int] = []
    real = AzureMLActions.from_settings(azure.settings, credential=FakeCredential(), transport=azure.arm)
    factory = real.client.lazy.factory
    assert factory is not None and not real.client.lazy.built

    def counting() -> Any:
        builds.append(1)
        return factory()

    actions = AzureMLActions(counting, real.workspace, real.retry)
    assert builds == []
    assert actions.ml is actions.ml and builds == [1]


def _run(code: str, tmp_path: Path, **env: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "RETRAIN_SQLITE_PATH": str(tmp_path / "ledger.db"), **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_main_handling_a_dry_run_event_and_reconciling_leave_the_sdks_unloaded(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "import main\n"
        "from function_app.runtime import get_retrainer\n"
        "from handlers.envelopes import parse_body\n"
        "from tests.conftest import SAMPLE_EVENTS\n"
        f"body = (SAMPLE_EVENTS / {DRIFT_SAMPLE!r}).read_text()\n"
        "worker = get_retrainer()\n"
        "[rec] = worker.service.handle_envelope(parse_body(body)[0]).decisions\n"
        "report = worker.reconcile()\n"
        "loaded = [m for m in ('azure.ai.ml', 'azure.monitor.query', 'azure.monitor.querymetrics') if m in sys.modules]\n"
        "sources = {k: v.name for k, v in worker.reconciler.stepper.online.sources.items()}\n"
        "print(json.dumps([rec.outcome, worker.backend, sources, loaded]))\n"
    )
    logs = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.OperationalInsights/workspaces/logs"
    assert _run(code, tmp_path, RETRAIN_BACKEND="dryrun", RETRAIN_LOG_ANALYTICS_WORKSPACE_ID=logs) == [
        "planned",
        "dryrun",
        {"metrics": "none", "logs": "logs"},
        [],
    ]


def test_choosing_the_azure_ml_backend_loads_the_sdk_only_when_it_acts(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from function_app.runtime import make_actions, make_credential\n"
        "from function_app.settings import Settings\n"
        "settings = Settings.from_env()\n"
        "actions = make_actions(settings, make_credential(settings))\n"
        "print(json.dumps([actions.name, 'azure.ai.ml' in sys.modules, 'azure.identity' in sys.modules]))\n"
    )
    workspace = {"AZUREML_SUBSCRIPTION_ID": SUB, "AZUREML_RESOURCE_GROUP": RG, "AZUREML_WORKSPACE_NAME": WS}
    assert _run(code, tmp_path, RETRAIN_BACKEND="azureml", **workspace) == ["azureml", False, False]


# --------------------------------------------------------------------------- identity and roles


class _NoToken:
    """A credential as DefaultAzureCredential fails with a wrong AZURE_CLIENT_ID: no status, no wire error."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise core_exceptions.ClientAuthenticationError(
            "DefaultAzureCredential failed to retrieve a token from the included credentials."
        )


def test_a_wrong_client_id_fails_the_decision_once_with_what_to_check(azure: AzureWorld) -> None:
    actions = AzureMLActions.from_settings(
        azure.settings, credential=_NoToken(), retry=azure.retry, transport=azure.arm
    )
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE), azure.new_worker(actions)).decisions
    assert rec.outcome == "failed"
    assert "AZURE_CLIENT_ID" in rec.reason and "AzureML Data Scientist" in rec.reason
    assert azure.clock.slept == []  # not retried: no retry mends a configuration fault


def test_a_403_in_the_first_hour_is_retried_while_roles_propagate_then_recorded(azure: AzureWorld) -> None:
    azure.arm.fail(403, method="GET", path=r"^components/", times=1000, code="AuthorizationFailed", message="no access")
    with pytest.raises(TransientError, match="take up to an hour to take effect"):
        azure.deliver(in_workspace(DRIFT_SAMPLE))
    azure.clock.now += 3600
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "failed" and "grant the function app's managed identity a role" in rec.reason


def _from_rest_object(check: Any) -> bool:
    """Named as the SDK's converters from a REST answer are, which its experimental check looks for."""
    return bool(check())


def _elsewhere(check: Any) -> bool:
    return bool(check())


def test_the_sdk_experimental_check_is_replaced_by_one_that_gives_its_answers_without_reading_the_stack(
    azure: AzureWorld,
) -> None:
    """Reading a deployment with a data collector makes azure-ai-ml ask four times whether a
    ``_from_rest_object`` is calling, with ``inspect.stack()`` (most of a rollout pass's CPU): the
    backend puts a frame walk in its place when it builds its client, and both answer alike."""
    from azure.ai.ml._utils import _experimental

    from function_app.adapters.azureml import client as azureml

    assert azure.actions.ml is not None  # the first action builds the client
    assert _experimental._should_skip_warning is azureml._from_rest_object_is_calling
    [sdk_check] = azureml._REPLACED
    assert "inspect.stack()" in inspect.getsource(sdk_check)  # the SDK's own, kept for this comparison
    for check in (sdk_check, azureml._from_rest_object_is_calling):
        assert (_from_rest_object(check), _elsewhere(check)) == (True, False)
    azureml._cheaper_experimental_check()  # a second client replaces nothing more
    assert [sdk_check] == azureml._REPLACED
