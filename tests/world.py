"""The one test world: a service and a reconciler over one ledger, assembled and started as a worker
assembles and starts them (:func:`handlers.wiring.assemble`, :func:`handlers.wiring.start`: its
ledger adopts the policy's models), with an injected clock and the test's own backend.

Every test that runs the service builds it here, so a change to how a worker is put together is
made once. ``new_worker`` gives a second worker on the same ledger (another instance, or the same
one after a restart), optionally with other ports (a dying backend, a ledger that dies).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from handlers.envelopes import parse_body
from handlers.policy import Policy
from handlers.reconcile import ReconcileReport
from handlers.records import DecisionRecord
from handlers.retrainer import Retrainer
from handlers.service import EventResult, RetrainService
from handlers.signals import ManualRequest, Trigger
from handlers.wiring import assemble, start
from tests.builders import EXAMPLE_POLICY, MODEL, WORKSPACE, drift_event
from tests.fakes import Clock, RecordingActions
from tests.ledgers import LedgerSpec

DRIFT = "Microsoft.MachineLearningServices.DatasetDriftDetected"


class World:
    """``spec``: the ledger (opened afresh for each worker, as each instance does). ``actions``: the
    backend (both ports; ``deployments`` overrides the second). ``options``: what
    :func:`assemble` takes (``lease``, ``job_grace``, ``retention``, ``allow_force``)."""

    __test__ = False  # a builder, not a test class

    def __init__(
        self,
        spec: LedgerSpec,
        *,
        policy: Policy = EXAMPLE_POLICY,
        actions: Any = None,
        deployments: Any = None,
        health: Any = None,
        clock: Any = None,
        workspaces: tuple[str, ...] = (WORKSPACE,),
        **options: Any,
    ) -> None:
        self.spec = spec
        self.policy = policy
        self.clock = self.time = clock or Clock()  # ``time``: what the workers read (a subclass may rename ``clock``)
        self.actions = actions if actions is not None else RecordingActions()
        self.deployments = deployments
        self.health = health
        self.workspaces = workspaces
        self.options = options
        self.worker = self.new_worker()
        self.ledger = self.worker.ledger
        self.requests = 0

    @property
    def service(self) -> RetrainService:
        return self.worker.service

    def new_worker(self, actions: Any = None, ledger: Any = None, **options: Any) -> Retrainer:
        """Another worker on the same ledger (and by default the same backend), started."""
        backend = actions if actions is not None else self.actions
        worker = assemble(
            self.policy,
            ledger if ledger is not None else self.spec.open(),
            backend,
            self.deployments if self.deployments is not None and actions is None else backend,
            self.time,
            list(self.workspaces),
            health=self.health,
            **{**self.options, **options},
        )
        return start(worker)

    def deliver(self, raw: dict[str, Any], worker: Retrainer | None = None) -> EventResult:
        [env] = parse_body(json.dumps([raw]))
        return (worker or self.worker).service.handle_envelope(env)

    def manual(self, action: str = "retrain", model: str = MODEL, worker: Retrainer | None = None, **kw: Any) -> Any:
        """A manual request with a fresh request id; raises what the service raises (NotFound, ...)."""
        self.requests += 1
        request = ManualRequest(
            Trigger("http", f"req-{self.requests}", "ManualRequest." + action),
            model,
            action,
            kw.pop("reason", "test"),
            **kw,
        )
        return (worker or self.worker).service.manual(request)

    def reconcile(self, now: datetime | None = None) -> ReconcileReport:
        """One pass of this world's reconciler (it keeps its purge clock across passes)."""
        return self.worker.reconcile(now)

    def flights(self, model: str = MODEL) -> dict[str, Any]:
        return dict(self.ledger.get_model(model).flights)


JOB_GRACE = timedelta(minutes=15)


class MissedRuns(World):
    """A retrain submitted from a drift event, whose run the tests then end (or not), with a job grace of
    :data:`JOB_GRACE` before the reconciler looks its job up (tests/test_missed_runs.py)."""

    def __init__(self, spec: LedgerSpec) -> None:
        super().__init__(spec, job_grace=JOB_GRACE)

    def submit(self) -> DecisionRecord:
        [rec] = self.deliver(drift_event(event_id="drift-1")).decisions
        assert rec.outcome == "submitted"
        return rec

    def job_of(self, rec: DecisionRecord) -> str:
        assert rec.job is not None
        return str(rec.job["name"])


class App:
    """The app as the local host serves it, on the ledger of ``spec``, and that ledger to read back
    (the ``app`` fixture of tests/conftest.py builds it)."""

    def __init__(self, spec: LedgerSpec, client: Any) -> None:
        self.spec = spec
        self.client = client
        self.ledger = spec.open()

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, _, out = self.client.call("POST", path, body, headers)
        return status, out

    def deliver(self, path: str, events: list[dict[str, Any]]) -> tuple[int, Any]:
        """One delivery, the way Event Grid makes it on ``path``."""
        return self.post(path, events, {"aeg-event-type": "Notification"})

    def decisions_of(self, event_id: str, event_type: str = DRIFT) -> list[Any]:
        found = self.ledger.event_status(Trigger(WORKSPACE, event_id, event_type))
        assert found is not None and found[0] == "done", found
        records = [self.ledger.get_decision(d) for d in found[1]]
        assert all(r is not None for r in records)
        return records
