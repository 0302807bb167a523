"""A rollout under test: a candidate deployed from a finished run, provisioned, and the reconciler passes
that move it through its steps (tests/test_rollout*.py, tests/test_real_subscription.py); a candidate at its
first step with the app serving the operator routes (:class:`Operated`: tests/test_operate.py and the tests
that steer a rollout by hand).

The example policy rolls ``sklearn_regression_model`` out in steps of [10, 50, 100] with a bake of
10 minutes, and the default health rule (failures: 5xx, 408, 424, model 5xx; at most 5%, at least 20
requests, not worse than the live deployment ``blue`` at confidence 0.99; without traffic, bake on up
to 30 minutes, then roll back). A step's window ends the source's lag (logs 5m, metrics 3m) before
now, so a step's last look is a bake and a lag after it began.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pytest

from function_app import runtime
from function_app.localhost import Host
from handlers import guards
from handlers.reconcile import ReconcileReport
from handlers.records import DecisionRecord, from_iso
from handlers.rollout_rules import DEFAULT_LAG
from tests.azure_world import ENDPOINT, MODEL, AzureWorld
from tests.conftest import Client

BAKE = timedelta(minutes=10)
LAG = DEFAULT_LAG["logs"]  # the logs' lag: :class:`Operated` serves from the logs

SOURCES = pytest.mark.parametrize("azure", ["logs", "metrics"], indirect=True)  # each test on each source


class Reads:
    """What a test of the example model's deploys reads back from its world (``self.azure``), mixed into
    the worlds of those tests: the model's records of an action (newest first), whether a rollout is in
    flight, the live traffic of the example endpoint."""

    azure: AzureWorld

    def records(self, action: str) -> list[DecisionRecord]:
        return [r for r in self.azure.ledger.decisions(MODEL, 100) if r.action == action]

    def in_flight(self) -> bool:
        return guards.ROLLOUT in self.azure.ledger.get_model(MODEL).flights

    def traffic(self) -> dict[str, int]:
        return dict(self.azure.arm.endpoints[ENDPOINT]["properties"]["traffic"])


class Rollout:
    """A candidate deployed from a finished run, provisioned, and the passes that move it on."""

    def __init__(
        self, azure: AzureWorld, run_id: str = "retrain-sklearn-regression-model-0123456789abcdef", r2: str = "0.61"
    ) -> None:
        self.azure = azure
        [self.deploy] = azure.deliver(azure.finished_run(r2=r2, run_id=run_id)).decisions
        assert self.deploy.outcome == "submitted"
        self.name = str(self.deploy.details["rendered"]["deployment"])
        azure.provisioned()
        self.lag = DEFAULT_LAG[azure.source]

    def reconcile(self, **service: Any) -> ReconcileReport:
        return self.azure.new_worker(**service).reconcile()

    def state(self, **service: Any) -> str:
        [entry] = self.reconcile(**service).rollouts
        return str(entry["state"])

    def started(self) -> datetime:
        at = from_iso(self.flight_data()["step_started"])
        assert at is not None
        return at

    def serve(self, *, minutes: int = 1, blue: dict[str, int] | None = None, **candidate: int) -> None:
        """Requests in each of the step's first ``minutes``: the candidate's, and the live ``blue``'s."""
        for m in range(minutes):
            when = self.started() + timedelta(minutes=m, seconds=30)
            self.azure.serve(when, self.name, **candidate)
            if blue:
                self.azure.serve(when, "blue", **blue)

    def bake(self) -> None:
        """To the step's last look: its bake and the source's lag after it began."""
        self.azure.now.now = self.started() + BAKE + self.lag

    def flight_data(self) -> dict[str, Any]:
        flight = self.azure.service.ledger.get_model(MODEL).flights[guards.ROLLOUT]
        return dict(flight.data["rollout"])

    def released(self) -> bool:
        return guards.ROLLOUT not in self.azure.service.ledger.get_model(MODEL).flights

    def record(self, kind: str) -> DecisionRecord:
        found = [r for r in self.azure.service.ledger.decisions(MODEL, 50) if r.action == kind]
        assert len(found) == 1, [r.id for r in found]
        return found[0]

    def windows(self) -> list[timedelta]:
        """The length of each window the source was asked about (the baseline's history before it aside:
        the logs query's ``window_start``, the metrics' latency request, which reads the window only)."""
        if self.azure.source == "logs":
            spans = []
            for c in self.azure.logs.calls:
                start, end = c.body["timespan"].split("/")
                history = re.search(r"let window_start = datetime\(([^)]+)\);", c.body["query"])
                spans.append([history.group(1) if history else start, end])
        else:
            calls = [c for c in self.azure.metrics.calls if c.query["metricnames"] == "RequestLatency_P95"]
            spans = [[c.query["starttime"], c.query["endtime"]] for c in calls]
        out = []
        for start, end in spans:
            a, b = from_iso(start), from_iso(end)
            assert a is not None and b is not None
            out.append(b - a)
        return out


def healthy_rollout(rollout: Rollout, source: str | None = None) -> None:
    """Serve a healthy candidate (and blue) in ``source`` through every step, to the promotion."""
    for per_minute in (10, 20, 30):
        for m in range(10):
            when = rollout.started() + timedelta(minutes=m, seconds=30)
            rollout.azure.serve(when, rollout.name, ok=per_minute, source=source)
            rollout.azure.serve(when, "blue", ok=100 - per_minute, source=source)
        rollout.bake()
        rollout.state()


def promote(rollout: Rollout) -> ReconcileReport:
    """Take the rollout through its three healthy steps to its promotion."""
    assert rollout.state() == "stepped"
    for ok in (100, 200):
        rollout.bake()
        rollout.serve(ok=ok)
        assert rollout.state() == "stepped"
    rollout.bake()
    rollout.serve(ok=300)
    report = rollout.reconcile()
    assert [r["state"] for r in report.rollouts] == ["promoted"]
    return report


def roll_back(rollout: Rollout) -> DecisionRecord:
    """The candidate's first step fails (every request a 5xx) and the judge rolls it back."""
    assert rollout.state() == "stepped"
    rollout.serve(errors=30, blue={"ok": 300})
    rollout.bake()
    assert rollout.state() == "rolled_back"
    rollout.azure.provisioned()
    return rollout.record("rollback")


class Operated(Reads):
    """A candidate rolled out to its first step (10%), and the app serving the operator routes."""

    def __init__(self, azure: AzureWorld) -> None:
        self.azure = azure
        [self.deploy] = azure.deliver(azure.finished_run(r2="0.61")).decisions
        self.name = str(self.deploy.details["rendered"]["deployment"])
        azure.provisioned()
        assert self.state() == "stepped"
        import main

        runtime.set_retrainer(azure.worker)
        self.client = Client(Host(main.app))

    def call(self, action: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
        headers = {"Idempotency-Key": key} if key else {}
        status, _, out = self.client.call("POST", f"/api/models/{MODEL}/{action}", body or {"reason": "ops"}, headers)
        return status, out

    def state(self) -> str:
        [entry] = self.azure.new_worker().reconcile().rollouts
        return str(entry["state"])

    def data(self) -> dict[str, Any]:
        return dict(self.azure.ledger.get_model(MODEL).flights[guards.ROLLOUT].data["rollout"])

    def started(self) -> datetime:
        at = from_iso(self.data()["step_started"])
        assert at is not None
        return at

    @classmethod
    def of(cls, azure: AzureWorld, client: Client, deploy: DecisionRecord) -> Operated:
        """The same helpers on a candidate already delivered (``deploy``: its record), served by ``client``."""
        made = cls.__new__(cls)
        made.azure, made.client, made.deploy = azure, client, deploy
        made.name = str(deploy.details["rendered"]["deployment"])
        azure.provisioned()
        assert made.state() == "stepped"
        return made

    def bake(self) -> None:
        """One healthy bake of the step (the logs serve the candidate and blue), then the time past it."""
        for m in range(int(BAKE.total_seconds() // 60)):
            when = self.started() + timedelta(minutes=m, seconds=30)
            self.azure.serve(when, self.name, ok=30)
            self.azure.serve(when, "blue", ok=30)
        self.azure.now.now = self.started() + BAKE + LAG

    def promote_to_the_end(self) -> None:
        """The rollout goes on to 100%, healthy."""
        while guards.ROLLOUT in self.azure.ledger.get_model(MODEL).flights:
            self.bake()
            assert self.state() in ("stepped", "promoted")

    def hold(self) -> None:
        """Healthy bakes until the rollout holds before its promotion for a person (deploy.approval.promote)."""
        while self.state() != "held":
            assert self.traffic()[self.name] < 100
            self.bake()
