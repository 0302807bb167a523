"""Batch endpoints (``deploy.batch_endpoint``): their rollout, and the port that reaches them.

A batch endpoint has no traffic to shift and no live requests to judge: its default deployment
(``defaults.deployment_name``) gets every job. So a batch candidate's rollout is one move, or two with
a comparison. The deploy decision started it as a batch deployment beside the default (named after the
decision); once it is provisioned, the reconciler's pass writes ahead a ``promote`` whose traffic is
``{candidate: 100}``: the default switched to it (:class:`BatchStepper`). With
``batch_endpoint.compare``, a ``compare`` comes first: champion and candidate each score the same data
asset in a batch job, and the switch waits for the gate's verdict on both jobs' metrics
(:mod:`handlers.rollout.compare`); a loser is a recorded skip (``reject``), never switched. A deployment that fails to provision is rolled back
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

from handlers import jobnames
from handlers.executor import Executor
from handlers.ports import Ledger
from handlers.records import Flight
from handlers.rollout import compare, traffic, writeahead
from handlers.rollout.compare import CANDIDATE, CHAMPION, BatchRun, BatchRuns
from handlers.rollout.progress import RolloutProgress, Transition
from handlers.rollout.traffic import fmt
from handlers.workspace_ports import Deployments

if TYPE_CHECKING:
    from handlers.batch_rules import CompareRule
    from handlers.freeze import Frozen


class Advances(Protocol):
    """What moves a rollout flight on by one transition (the reconciler's view of a stepper)."""

    def advance(self, model: str, flight: Flight, now: datetime) -> dict[str, Any]: ...


class BatchStepper:
    """Moves a batch rollout on: provisioning, the comparison (with ``compare(model)``, the model's
    ``batch_endpoint.compare``), then the default switched (or a rollback). ``runs`` reads the
    comparison's batch jobs; ``job_name_key`` names them (:func:`handlers.jobnames.batch_job_name`)."""

    def __init__(
        self,
        ledger: Ledger,
        deployments: Deployments,
        executor: Executor,
        frozen: Callable[[str, str, datetime], Frozen | None] | None = None,
        compare: Callable[[str], CompareRule | None] | None = None,
        runs: BatchRuns | None = None,
    ) -> None:
        self.ledger = ledger
        self.deployments = deployments
        self.executor = executor
        self.frozen = frozen
        self.compare = compare or (lambda model: None)
        self.runs = runs

    def advance(self, model: str, flight: Flight, now: datetime) -> dict[str, Any]:
        endpoint, _, deployment = str(flight.job).partition("/")
        entry: dict[str, Any] = {"model": model, "decision": flight.decision, "deployment": str(flight.job)}
        progress = RolloutProgress.of(flight)
        if progress is not None and progress.pending is not None:
            return {**entry, **self.executor.transition(model, flight, progress.pending, now)}
        if progress is not None and progress.paused:
            return {**entry, "state": "paused", "step": progress.step, "paused": progress.paused}
        rule = self.compare(model)
        if progress is not None and progress.compare is not None and rule is not None:
            return {**entry, **self._judge(model, flight, progress, rule, now)}
        start = RolloutProgress(endpoint, deployment, (100,))
        never = "the endpoint's default deployment was never changed"
        waiting = writeahead.unprovisioned(self.deployments, model, flight, endpoint, deployment, never, batch=True)
        if isinstance(waiting, Transition):
            return {**entry, **self._write_ahead(model, flight, waiting, now, start)}
        if waiting is not None:
            return {**entry, **waiting}
        original = traffic.live(self.deployments.endpoint_traffic(endpoint))
        start = replace(start, original=original, traffic=original)
        before = next(iter(original), None)
        if rule is not None:
            pending = self._comparison(model, flight, rule, before)
            return {**entry, **self._write_ahead(model, flight, pending, now, start)}
        return {**entry, **self._write_ahead(model, flight, self._switch(model, flight, original, ""), now, start)}

    def _comparison(self, model: str, flight: Flight, rule: CompareRule, champion: str | None) -> Transition:
        """The ``compare`` transition: the batch jobs it starts, named before it is written ahead."""
        endpoint, _, deployment = str(flight.job).partition("/")
        ahead = Transition.of(model, flight, "compare", -1, -1, None, "")  # its id names the jobs
        deployments = {CANDIDATE: deployment, **({CHAMPION: champion} if champion and champion != deployment else {})}
        key = self.executor.job_name_key
        jobs = {role: jobnames.batch_job_name(key, model, ahead.id, role) for role in deployments}
        against = f"the default {champion}" if CHAMPION in deployments else "no default deployment (floors only)"
        return Transition.of(
            model,
            flight,
            "compare",
            -1,
            -1,
            None,
            f"batch deployment {flight.job} is provisioned; comparison: it and {against} each score {rule.data} "
            f"in a batch job ({', '.join(f'{r} {j}' for r, j in sorted(jobs.items()))}), judged on "
            f"{', '.join(m.name for m in rule.rules)}; the default is switched only if it wins",
            jobs=jobs,
            deployments=deployments,
            data=rule.data,
            endpoint=endpoint,
            batch=True,
        )

    def _judge(
        self, model: str, flight: Flight, progress: RolloutProgress, rule: CompareRule, now: datetime
    ) -> dict[str, Any]:
        """The comparison so far: both jobs read, then waited for, or the switch, the skip or the failure."""
        held = dict(progress.compare or {})
        jobs = {str(k): str(v) for k, v in dict(held.get("jobs") or {}).items()}
        deployments = {str(k): str(v) for k, v in dict(held.get("deployments") or {}).items()}
        if self.runs is None:
            runs: dict[str, BatchRun | None] = {
                role: BatchRun(job, "unknown", True, note="this backend cannot read batch jobs (a dry run)")
                for role, job in jobs.items()
            }
        else:
            runs = {role: self.runs.batch_run(job, rule.step) for role, job in sorted(jobs.items())}
        verdict = compare.judge(rule, jobs, runs, deployments, compare.since_of(held), now)
        if verdict.next == "wait":
            return {"state": "comparing", "why": verdict.why, "compare": verdict.figures}
        if verdict.next == "promote":
            pending = self._switch(model, flight, dict(progress.original or {}), f"{verdict.why}; ", verdict.figures)
        else:
            kind = "reject" if verdict.next == "reject" else "compare-failed"
            said = "" if verdict.next == "reject" else "; not switched"
            pending = Transition.of(
                model,
                flight,
                kind,
                -1,
                -1,
                None,
                f"batch rollout of {flight.job} {verdict.why}{said}; the default stays "
                f"{deployments.get(CHAMPION) or '(none)'} and the candidate is retired",
                compare=verdict.figures,
                batch=True,
            )
        return self._write_ahead(model, flight, pending, now)

    def _switch(
        self, model: str, flight: Flight, original: dict[str, int], why: str, figures: dict[str, Any] | None = None
    ) -> Transition:
        """The promotion: the endpoint's default switched to the candidate."""
        endpoint, _, deployment = str(flight.job).partition("/")
        before = next(iter(original), None)
        demoted = sorted(d for d in original if d != deployment)
        return Transition.of(
            model,
            flight,
            "promote",
            -1,
            -1,
            {deployment: 100},
            f"{why}batch deployment {flight.job} is provisioned; the default deployment of batch endpoint {endpoint} "
            f"switched {before or '(none)'} -> {deployment} (traffic {fmt(original)} -> {fmt({deployment: 100})})",
            endpoint=endpoint,
            demoted=demoted,
            batch=True,
            compare=figures,
        )

    def _write_ahead(
        self, model: str, flight: Flight, pending: Transition, now: datetime, start: RolloutProgress | None = None
    ) -> dict[str, Any]:
        return writeahead.write_ahead(self.ledger, self.executor, self.frozen, model, flight, pending, now, start)


class ByModel:
    """The reconciler's stepper: a batch model's flights go to ``batch``, the others to ``online``."""

    def __init__(self, online: Advances, batch: Advances, is_batch: Callable[[str], bool]) -> None:
        self.online, self.batch, self.is_batch = online, batch, is_batch

    def advance(self, model: str, flight: Flight, now: datetime) -> dict[str, Any]:
        return (self.batch if self.is_batch(model) else self.online).advance(model, flight, now)
