"""The worker's death, and another worker's write landing first, injected by test code around the
ports the service is given: never by patching the service. :class:`WorkerDied` is a BaseException,
so nothing in the service catches it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from handlers.claims import LEASE
from handlers.errors import TransientError
from handlers.plans import DeployPlan, JobPlan
from handlers.ports import Ledger
from handlers.records import DecisionRecord, ModelState
from handlers.signals import Trigger
from handlers.workspace_ports import ActionResult, Actions, CandidateFacts, JobInfo
from handlers.worthiness import RetrainFacts

if TYPE_CHECKING:  # tests.azure_world imports this module
    from tests.azure_world import AzureWorld

T = TypeVar("T")


class WorkerDied(BaseException):
    """The worker is gone (killed, out of memory, scaled in) at this point."""


class _PassesThrough:
    """Actions that hand everything to ``inner``; the subclasses die where they say."""

    def __init__(self, inner: Actions) -> None:
        self.inner = inner
        self.name = inner.name

    @property
    def batch(self) -> Any:
        """The backend's batch endpoints, dying where this one dies."""
        return type(self)(getattr(self.inner, "batch", self.inner))

    def submit_retrain(self, plan: JobPlan) -> ActionResult:
        return self.inner.submit_retrain(plan)

    def candidate_facts(self, plan: DeployPlan) -> CandidateFacts:
        return self.inner.candidate_facts(plan)

    def start_deploy(self, plan: DeployPlan, facts: CandidateFacts) -> ActionResult:
        return self.inner.start_deploy(plan, facts)

    def find_retrain(self, plan: JobPlan) -> ActionResult | None:
        return self.inner.find_retrain(plan)

    def find_deploy(self, plan: DeployPlan) -> ActionResult | None:
        return self.inner.find_deploy(plan)

    def job_status(self, name: str) -> JobInfo | None:
        return self.inner.job_status(name)

    def retrain_facts(self, plan: JobPlan) -> RetrainFacts:
        return self.inner.retrain_facts(plan)

    def __getattr__(self, name: str) -> Any:
        """``latest_data``, ``latest_model`` (handlers.pins.AssetVersions) are the backend's, when it has them (it
        reads a workspace)."""
        if name in ("latest_data", "latest_model"):
            return getattr(self.inner, name)  # AttributeError: a backend that reads no workspace pins nothing
        raise AttributeError(name)

    def deployment_state(self, endpoint: str, deployment: str) -> str | None:
        return self.inner.deployment_state(endpoint, deployment)

    def endpoint_traffic(self, endpoint: str) -> dict[str, int]:
        return self.inner.endpoint_traffic(endpoint)

    def set_traffic(self, endpoint: str, traffic: dict[str, int] | None, mirror: dict[str, int] | None = None) -> bool:
        return self.inner.set_traffic(endpoint, traffic, mirror)


class DiesBeforeActing(_PassesThrough):
    """Actions whose worker dies after the reservation, before anything reaches Azure."""

    def __init__(self, inner: Actions) -> None:
        super().__init__(inner)
        self.plans: list[JobPlan | DeployPlan] = []

    def submit_retrain(self, plan: JobPlan) -> ActionResult:
        self.plans.append(plan)
        raise WorkerDied

    def start_deploy(self, plan: DeployPlan, facts: CandidateFacts) -> ActionResult:
        self.plans.append(plan)
        raise WorkerDied


class DiesAfterActing(_PassesThrough):
    """Actions that do the real thing, then die before the service can record or confirm it."""

    def submit_retrain(self, plan: JobPlan) -> ActionResult:
        self.inner.submit_retrain(plan)
        raise WorkerDied

    def start_deploy(self, plan: DeployPlan, facts: CandidateFacts) -> ActionResult:
        self.inner.start_deploy(plan, facts)
        raise WorkerDied


class DiesAfterSettingTraffic(DiesAfterActing):
    """Actions that set the endpoint's traffic, then die before the rollout step is recorded."""

    def set_traffic(self, endpoint: str, traffic: dict[str, int] | None, mirror: dict[str, int] | None = None) -> bool:
        self.inner.set_traffic(endpoint, traffic, mirror)
        raise WorkerDied


class LedgerThatDies:
    """A ledger whose worker dies right after one write: ``after`` is 'outcome' (the action's outcome
    is recorded, not yet confirmed in the model's state) or 'confirm' (confirmed; the event is not
    yet finished). Everything else goes to the real ledger.

    The executor writes an outcome and settles its slot in one write (``record_and_update``), so
    'outcome' is what a worker of the code before that change left when it died between its two
    writes: the record written, the slot not settled (ledgers written by it are still read)."""

    def __init__(self, inner: Ledger, after: str) -> None:
        assert after in ("outcome", "confirm")
        self.inner = inner
        self.after = after

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_decision(self, record: DecisionRecord) -> DecisionRecord:
        stored = self.inner.put_decision(record)
        if self.after == "outcome" and record.outcome != "reserved":
            raise WorkerDied
        return stored

    def record_and_update(self, model: str, record: DecisionRecord, change: Any) -> DecisionRecord:
        if self.after == "outcome":  # the code before: the record first, then (never) the slot
            self.inner.put_decision(record)
            raise WorkerDied
        return self.inner.record_and_update(model, record, change)

    def finish_event(
        self, trigger: Trigger, decision_ids: Sequence[str], now: datetime, records: Sequence[DecisionRecord] = ()
    ) -> list[DecisionRecord]:
        if self.after == "confirm":
            raise WorkerDied
        return self.inner.finish_event(trigger, decision_ids, now, records)


class DiesBeforeRecording:
    """A ledger whose worker dies just before writing a decision record of ``outcome``: the writes before
    it (a slot taken, a release marked) landed, that record and everything after did not."""

    def __init__(self, inner: Ledger, outcome: str) -> None:
        self.inner = inner
        self.outcome = outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_decision(self, record: DecisionRecord) -> DecisionRecord:
        if record.outcome == self.outcome:
            raise WorkerDied
        return self.inner.put_decision(record)


class FinishFailsOnce:
    """A ledger whose first marking of an event done fails transiently (the storage answered 503):
    the delivery is answered transient, the claim given back, and Event Grid redelivers later."""

    def __init__(self, inner: Ledger) -> None:
        self.inner = inner
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def finish_event(
        self, trigger: Trigger, decision_ids: Sequence[str], now: datetime, records: Sequence[DecisionRecord] = ()
    ) -> list[DecisionRecord]:
        if not self.failed:
            self.failed = True
            raise TransientError(f"finishing event {trigger.event_id}: the service answered 503 (ServerBusy)")
        return self.inner.finish_event(trigger, decision_ids, now, records)


class ChangedTwiceOnce:
    """A ledger on which another worker makes the same first change to a model just before this
    one: two operators sending one request at the same moment (the second write meets the first's)."""

    def __init__(self, inner: Ledger) -> None:
        self.inner = inner
        self.raced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def update_model(self, model: str, change: Callable[[ModelState], tuple[ModelState | None, T]]) -> T:
        if not self.raced:
            self.raced = True
            self.inner.update_model(model, change)  # the other worker's write lands first
        return self.inner.update_model(model, change)


class AnotherWorkerFinishesItFirst:
    """A ledger on which, just before this worker's second change to a model, another worker finishes
    the rollout transition this one wrote ahead (a reconciler pass that carried it out meanwhile)."""

    def __init__(self, inner: Ledger, model: str) -> None:
        self.inner = inner
        self.model = model
        self.updates = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def update_model(self, model: str, change: Callable[[ModelState], tuple[ModelState | None, T]]) -> T:
        from datetime import UTC, datetime

        from handlers.rollout import changes
        from handlers.rollout.progress import ROLLOUT, RolloutProgress

        self.updates += 1
        if self.updates == 2:
            flight = self.inner.get_model(self.model).flights[ROLLOUT]
            progress = RolloutProgress.of(flight)
            assert progress is not None and progress.pending is not None
            pending = progress.pending.id
            now = datetime.now(UTC)
            assert self.inner.update_model(self.model, lambda s: changes.commit(s, flight.decision, pending, now))
        return self.inner.update_model(model, change)


class BatchRunsThatDie:
    """A batch comparison's jobs (the BatchRuns port) whose worker dies: ``after`` 'invoking' (once every
    job of the comparison is started, before the comparison is recorded) or 'reading' (after reading the
    first job of a pass, before the second: one job has finished, the worker is gone)."""

    def __init__(self, inner: Any, after: str) -> None:
        assert after in ("invoking", "reading")
        self.inner = inner
        self.after = after
        self.invoked = 0

    def invoke_batch(self, endpoint: str, deployment: str, data: str, job: str) -> str:
        name = str(self.inner.invoke_batch(endpoint, deployment, data, job))
        self.invoked += 1
        if self.after == "invoking" and self.invoked == 2:
            raise WorkerDied
        return name

    def cancel_batch(self, job: str) -> bool:
        return bool(self.inner.cancel_batch(job))

    def batch_run(self, job: str, step: str | None) -> Any:
        run = self.inner.batch_run(job, step)
        if self.after == "reading":
            raise WorkerDied
        return run


def resumed(azure: AzureWorld, raw: dict[str, Any], by: str) -> DecisionRecord:
    """The decision of ``raw`` whose worker died, resumed past its lease (the service's default,
    :data:`handlers.claims.LEASE`) by a
    redelivery of its event or by the reconciler (which then resumes it alone: nothing released or deferred)."""
    azure.now.advance(seconds=LEASE.total_seconds())
    if by == "redelivery":
        [rec] = azure.deliver(raw, azure.new_worker()).decisions
        return rec
    report = azure.new_worker().reconcile()
    assert report.released == [] and report.deferred == [], report.to_dict()
    [rec] = report.resumed
    return rec
