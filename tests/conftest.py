"""Shared fixtures. No test may reach the internet: a guard refuses any non-loopback connection."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from tests.azurite import Azurite
from tests.ledgers import LedgerSpec

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

    from handlers.ports import Ledger
    from tests.approving import Approving
    from tests.azure_world import AzureWorld
    from tests.rollouts import Rollout
    from tests.topic_receiver import TopicReceiver
    from tests.world import App, World

REPO = Path(__file__).resolve().parent.parent
# RETRAIN_JOB_NAME_KEY of the tests that run the app on the Table ledger (where it is required).
TEST_JOB_NAME_KEY = "0123456789abcdef" * 4

# Microsoft's published sample events, kept in the repository as data (tests/data/events/README.md).
SAMPLE_EVENTS = REPO / "tests" / "data" / "events"

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


class NetworkBlocked(RuntimeError):
    pass


def _is_local(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if not _is_local(address):
        raise NetworkBlocked(f"test tried to open a network connection to {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if not _is_local(address):
        raise NetworkBlocked(f"test tried to open a network connection to {address!r}")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    """A name lookup is a network request too (to the resolver): only local names and literal addresses."""
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and name != "localhost":
        try:
            ipaddress.ip_address(str(name).strip("[]"))
        except ValueError:
            raise NetworkBlocked(f"test tried to resolve {name!r}") from None
    return _real_getaddrinfo(host, *args, **kwargs)


INFRA_MODULES = frozenset(
    {
        "test_infra_settings",
        "test_infra_events",
        "test_infra_upstream",
        "test_infra_new_data",
        "test_permissions",
        "test_hooks_topic",
        "test_hooks_provision",
        "test_hooks_subscriptions",
        "test_hooks_wiring",
        "test_check_infra",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers that ``make check`` uses to leave the heavier tests to ``make test``: ``azurite`` (uses
    the Azurite fixtures, or runs on the Table ledger: a ``table`` parameter), ``sdk`` (drives the
    real Azure ML SDK through the fake ARM: the ``azure`` fixture) and ``infra`` (parses the Bicep or
    runs the azd hooks)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        fixtures = set(getattr(item, "fixturenames", ()))
        if (callspec is not None and "table" in callspec.params.values()) or {"azurite", "own_azurite"} & fixtures:
            item.add_marker(pytest.mark.azurite)
        if "azure" in fixtures:
            item.add_marker(pytest.mark.sdk)
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in INFRA_MODULES:
            item.add_marker(pytest.mark.infra)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)


@pytest.fixture(autouse=True)
def _close_azure_worlds() -> Iterator[None]:
    """Every :class:`tests.azure_world.AzureWorld` a test made is closed after it (its SDK pollers end)."""
    yield
    module = sys.modules.get("tests.azure_world")  # imported only by the tests that use it
    if module is not None:
        module.close_open_worlds()


class Client:
    """Calls the app's own HTTP functions through the local host's dispatcher (no sockets)."""

    def __init__(self, host: Any) -> None:
        self.host = host

    def call(
        self, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
        status, out_headers, out = self.host.dispatch(method, url, headers or {}, raw)
        return status, out_headers, json.loads(out) if out else None


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """The app with a fresh SQLite ledger, the example policy, the dry-run backend and a fixed clock."""
    import main
    from function_app import runtime
    from function_app.localhost import Host
    from function_app.settings import Settings
    from tests.fakes import Clock

    monkeypatch.setenv("RETRAIN_SQLITE_PATH", str(tmp_path / "ledger.db"))
    runtime.set_retrainer(runtime.build(Settings.from_env(), clock=Clock()))
    yield Client(Host(main.app))
    runtime.set_retrainer(None)


def retrain_cli(*args: str, env: dict[str, str] | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
    """``retrain ARGS`` (``python -m function_app.cli``) run from the repository root, as a newcomer runs it,
    with ``env`` over this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "function_app.cli", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def workspace_user(azure: AzureWorld) -> MLClient:
    """The squatter of tests/test_job_squatting*.py: a person with a workspace account (AzureML Data
    Scientist), with the SDK."""
    from azure.ai.ml import MLClient  # imports azure-ai-ml: only for the tests that use it

    from tests.azure_world import RG, SUB, WS

    return MLClient(azure.arm.workspace_user(), SUB, RG, WS, transport=azure.arm, retry_total=0)


def load_module(name: str, path: Path) -> ModuleType:
    """The Python file at ``path`` (a script, a hook) loaded as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_sample(name: str) -> Any:
    return json.loads((SAMPLE_EVENTS / name).read_text(encoding="utf-8"))


def sample_files() -> list[Path]:
    return sorted(SAMPLE_EVENTS.glob("*.eventgrid.json"))


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Close the Chromium that the console tests of one module share (tests/browser.py) after the last
    of them in this process: a module's tests run one after another in a process, so no other module's
    test runs beside a started Playwright (it marks the main thread's event loop as running)."""
    if nextitem is None or getattr(nextitem, "module", None) is not getattr(item, "module", None):
        from tests.browser import close_browser

        close_browser()


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One Azurite for the session, started on first use on free ports of 127.0.0.1, and stopped."""
    instance = Azurite().start()
    yield instance
    instance.close()


def table_prefix() -> str:
    """A fresh set of tables per test in the shared Azurite (table names: letters and digits)."""
    return "t" + uuid.uuid4().hex[:12]


LEDGERS = ("sqlite", "table")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that asks for ``ledger_spec`` runs on SQLite; one whose subject is the ledger itself
    (marked ``both_ledgers``, on the test or its module: the ledger contract, crash points,
    notifications, the storms) runs on each ledger. A test may still parametrize ``ledger_spec``
    (indirect) itself, with the kinds it needs."""
    if "ledger_spec" not in metafunc.fixturenames:
        return
    if any("ledger_spec" in marker.args[0] for marker in metafunc.definition.iter_markers("parametrize")):
        return
    both = metafunc.definition.get_closest_marker("both_ledgers") is not None
    metafunc.parametrize("ledger_spec", LEDGERS if both else LEDGERS[:1], indirect=True)


@pytest.fixture
def ledger_spec(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerSpec:
    """A ledger the service can run on, fresh for the test: SQLite, or each ledger for a test marked
    ``both_ledgers`` (the contract holds on all of them)."""
    if request.param == "table":
        instance: Azurite = request.getfixturevalue("azurite")
        return LedgerSpec("table", instance.connection_string, table_prefix())
    return LedgerSpec("sqlite", str(tmp_path / "ledger.db"))


@pytest.fixture
def ledger(ledger_spec: LedgerSpec) -> Ledger:
    """The ledger of ``ledger_spec``, opened (the ledger contract's tests, tests/test_ledger_contract*.py)."""
    return ledger_spec.open()


@pytest.fixture
def azure(
    request: pytest.FixtureRequest, ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AzureWorld]:
    """A workspace behind the fake ARM, the real Azure ML backend, and the service on each ledger;
    the rollout health source is ``logs`` unless the test parametrizes ``azure`` (indirect) with
    ``metrics``."""
    from tests.azure_world import AzureWorld  # imports azure-ai-ml: only for the tests that use it

    monkeypatch.chdir(tmp_path)  # not a git repository, as on Azure: the SDK adds no git properties to jobs
    world = AzureWorld(tmp_path, ledger_spec, source=getattr(request, "param", "logs"))
    yield world
    world.close()  # the SDK's pollers of started operations end
    assert world.arm.unexpected == []
    assert world.logs.unexpected == []
    assert world.metrics.unexpected == []


@pytest.fixture
def rollout(azure: AzureWorld) -> Rollout:
    """A candidate deployed from a finished run and provisioned (tests/rollouts.py)."""
    from tests.rollouts import Rollout  # imports azure-ai-ml: only for the tests that use it

    return Rollout(azure)


@pytest.fixture
def approving(ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Approving]:
    """The example policy with ``deploy.approval`` (required, a day, four eyes), the app serving the routes."""
    from tests.approving import opened  # imports azure-ai-ml: only for the tests that use it
    from tests.builders import signed_in

    monkeypatch.chdir(tmp_path)  # not a git repository, as on Azure
    signed_in(monkeypatch)
    yield from opened(tmp_path, ledger_spec, {"required": True, "expires": "24h", "four_eyes": True})


@pytest.fixture
def opened_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Opens worlds whose retrain and deploy may wait for approval while a workspace user registers data
    (``opened_with(retrain=, deploy=, watch=)``: tests/approving.py ``Watching``), signed in."""
    from tests.approving import watching_worlds  # imports azure-ai-ml: only for the tests that use it
    from tests.builders import signed_in

    monkeypatch.chdir(tmp_path)  # not a git repository, as on Azure
    signed_in(monkeypatch)
    yield from watching_worlds(tmp_path)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[TopicReceiver]:
    """The notification topic as infra/ creates it (Entra ID only), the app's identity with its roles."""
    from tests.topic_receiver import TopicReceiver

    topic = TopicReceiver().start()
    topic.trust(monkeypatch)
    yield topic
    topic.close()


@pytest.fixture
def served(ledger_spec: LedgerSpec, receiver: TopicReceiver) -> Iterator[tuple[World, Client]]:
    """A worker that notifies the receiver, installed as the app's service, and the app's HTTP functions
    (tests/test_notifications*.py, tests/test_telemetry.py)."""
    import main
    from function_app import runtime
    from function_app.localhost import Host
    from tests.notifying import notifier_for
    from tests.world import World

    world = World(ledger_spec, notifier=notifier_for(receiver))
    runtime.set_retrainer(world.worker)
    yield world, Client(Host(main.app))
    runtime.set_retrainer(None)


@pytest.fixture
def app(ledger_spec: LedgerSpec, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[App]:
    """The app as the local host serves it (dry-run backend), on each ledger, with the example policy
    taking training_data from the drift event's TargetDatasetId (what bad and forged events try)."""
    import main
    from function_app import runtime
    from function_app.localhost import Host
    from function_app.settings import Settings
    from tests.fakes import Clock
    from tests.world import App

    for name, value in ledger_spec.settings().items():
        monkeypatch.setenv(name, value)
    if ledger_spec.kind == "table":
        monkeypatch.setenv("RETRAIN_JOB_NAME_KEY", TEST_JOB_NAME_KEY)
    example = (REPO / "examples" / "policy.yaml").read_text()
    taken = "          type: mltable\n"
    assert taken in example
    policy = tmp_path / "policy.yaml"
    policy.write_text(example.replace(taken, taken + "          from_event: TargetDatasetId\n", 1))
    monkeypatch.setenv("RETRAIN_POLICY_PATH", str(policy))
    runtime.set_retrainer(runtime.build(Settings.from_env(), clock=Clock()))
    yield App(ledger_spec, Client(Host(main.app)))
    runtime.set_retrainer(None)
