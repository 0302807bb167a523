"""Batch endpoints (``deploy.batch_endpoint``): their rollout, and the port that reaches them.

A batch endpoint has no traffic to shift and no live requests to judge: its default deployment
(``defaults.deployment_name``) gets every job. So a batch candidate's rollout is one move. The deploy
decision started it as a batch deployment beside the default (named after the decision); once it is
provisioned, the reconciler's pass writes ahead a ``promote`` whose traffic is ``{candidate: 100}``:
the default switched to it (:class:`BatchStepper`). A deployment that fails to provision is rolled back
before the default ever changes. The promotion keeps the default it replaced (``ModelState.kept``), so
an operator's rollback switches back, and retirement deletes the demoted deployment after
``deploy.retire_after`` as it does online. Each move is a transition of the one table
(:mod:`handlers.rollout.progress`), written ahead, carried out by the executor, recorded, committed:
a worker that dies anywhere leaves it pending, and the next pass carries out the same one.

:class:`handlers.routing.ByEndpoint` is the Deployments port the service is given: calls about a batch
endpoint the policy names go to the backend's batch port, the others to its online one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from handlers.executor import Executor
from handlers.ports import Deployments, Ledger
from handlers.records import Flight
from handlers.rollout import traffic, writeahead
from handlers.rollout.progress import RolloutProgress, Transition
from handlers.rollout.traffic import fmt

if TYPE_CHECKING:
    from handlers.freeze import Frozen


class Advances(Protocol):
    """What moves a rollout flight on by one transition (the reconciler's view of a stepper)."""

    def advance(self, model: str, flight: Flight, now: datetime) -> dict[str, Any]: ...


class BatchStepper:
    """Moves a batch rollout on: provisioning, then the default switched (or a rollback)."""

    def __init__(
        self,
        ledger: Ledger,
        deployments: Deployments,
        executor: Executor,
        frozen: Callable[[str, str, datetime], Frozen | None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.deployments = deployments
        self.executor = executor
        self.frozen = frozen

    def advance(self, model: str, flight: Flight, now: datetime) -> dict[str, Any]:
        endpoint, _, deployment = str(flight.job).partition("/")
        entry: dict[str, Any] = {"model": model, "decision": flight.decision, "deployment": str(flight.job)}
        progress = RolloutProgress.of(flight)
        if progress is not None and progress.pending is not None:
            return {**entry, **self.executor.transition(model, flight, progress.pending, now)}
        if progress is not None and progress.paused:
            return {**entry, "state": "paused", "step": progress.step, "paused": progress.paused}
        state = self.deployments.deployment_state(endpoint, deployment)
        start = RolloutProgress(endpoint, deployment, (100,))
        if state is None or state.lower() in traffic.PROVISIONING_FAILED:
            what = "does not exist" if state is None else f"ended provisioning {state}"
            pending = Transition.of(
                model,
                flight,
                "rollback",
                -1,
                -1,
                None,
                f"batch rollout of {flight.job} rolled back: the batch deployment {what}; the endpoint's default "
                "deployment was never changed",
                provisioning=state or "missing",
                batch=True,
            )
            return {**entry, **self._write_ahead(model, flight, pending, now, start)}
        if state.lower() != traffic.PROVISIONED:
            return {**entry, "state": "provisioning", "provisioning": state}
        original = traffic.live(self.deployments.endpoint_traffic(endpoint))
        start = replace(start, original=original, traffic=original)
        before = next(iter(original), None)
        demoted = sorted(d for d in original if d != deployment)
        pending = Transition.of(
            model,
            flight,
            "promote",
            -1,
            -1,
            {deployment: 100},
            f"batch deployment {flight.job} is provisioned; the default deployment of batch endpoint {endpoint} "
            f"switched {before or '(none)'} -> {deployment} (traffic {fmt(original)} -> {fmt({deployment: 100})})",
            endpoint=endpoint,
            demoted=demoted,
            batch=True,
        )
        return {**entry, **self._write_ahead(model, flight, pending, now, start)}

    def _write_ahead(
        self, model: str, flight: Flight, pending: Transition, now: datetime, start: RolloutProgress
    ) -> dict[str, Any]:
        return writeahead.write_ahead(self.ledger, self.executor, self.frozen, model, flight, pending, now, start)


class ByModel:
    """The reconciler's stepper: a batch model's flights go to ``batch``, the others to ``online``."""

    def __init__(self, online: Advances, batch: Advances, is_batch: Callable[[str], bool]) -> None:
        self.online, self.batch, self.is_batch = online, batch, is_batch

    def advance(self, model: str, flight: Flight, now: datetime) -> dict[str, Any]:
        return (self.batch if self.is_batch(model) else self.online).advance(model, flight, now)
