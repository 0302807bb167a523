"""A batch candidate's comparison job (``deploy.batch_endpoint.compare``, docs/rollouts.md).

Once the candidate batch deployment is provisioned, the batch stepper (:mod:`handlers.rollout.batch`)
writes ahead a ``compare`` transition naming the two batch jobs (:func:`handlers.jobnames.batch_job_name`:
keyed, so a pass that finds the transition pending adopts the jobs it started instead of starting two
more); the executor starts them (:func:`start`): the endpoint's default deployment (the champion) and
the candidate each score the same data asset. Each later pass reads both jobs (:class:`BatchRuns`) and
:func:`judge` decides, purely: wait while a job runs (never past the rule's ``timeout``), fail the
comparison when a job did not complete, else the gate (:func:`handlers.gate.evaluate`) judges the
candidate's metrics against the champion's, as both jobs logged them with MLflow. A winner gets the
default switched (``promote``), a loser is a recorded skip (``reject``), a comparison that could not
judge is ``compare-failed``; the last two leave the default as it was and the candidate to retirement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from handlers import gate
from handlers.errors import PermanentError
from handlers.records import from_iso, span

if TYPE_CHECKING:
    from handlers.batch_rules import CompareRule
    from handlers.rollout.progress import Transition

CANDIDATE, CHAMPION = "candidate", "champion"


@dataclass(frozen=True)
class BatchRun:
    """A comparison's batch job as the workspace reports it now: ``status`` as Azure ML spells it
    ('Running', 'Completed', 'Failed', ...), whether it is final (``terminal``) and, once it completed,
    the MLflow metrics its step logged (``metrics``; ``note`` says why there are none)."""

    name: str
    status: str
    terminal: bool
    metrics: dict[str, float] | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"job": self.name, "status": self.status}
        if self.metrics is not None:
            out["metrics"] = dict(self.metrics)
        if self.note:
            out["note"] = self.note
        return out


class BatchRuns(Protocol):
    """Batch jobs of batch deployments (the Azure ML backend; a dry run has none)."""

    def invoke_batch(self, endpoint: str, deployment: str, data: str, job: str) -> str:
        """Start a batch job of ``endpoint/deployment`` scoring the data asset ``data``
        (``azureml:<name>:<version>``), asking for the name ``job``; a job of that name the service
        created already is adopted, not started again. Returns the job's name. Not waited for."""
        ...

    def batch_run(self, job: str, step: str | None) -> BatchRun | None:
        """The batch job ``job`` now, with the MLflow metrics of its step ``step`` (None: of the job's own
        run) once it completed; None when the workspace has no such job."""
        ...

    def cancel_batch(self, job: str) -> bool:
        """Ask Azure ML to cancel the batch job ``job`` (not waited for); False when it has ended already
        or is not there (nothing is sent)."""
        ...


@dataclass(frozen=True)
class CompareVerdict:
    """What the comparison says now: ``wait``, ``promote``, ``reject`` (the gate refused the candidate)
    or ``fail`` (it could not judge), why, and its figures for the record."""

    next: str
    why: str
    figures: dict[str, Any] = field(default_factory=dict)


def judge(
    rule: CompareRule,
    jobs: Mapping[str, str],
    runs: Mapping[str, BatchRun | None],
    deployments: Mapping[str, str],
    since: datetime,
    now: datetime,
) -> CompareVerdict:
    """The comparison of the batch jobs ``jobs`` (by role), as ``runs`` read them, started ``since``.
    ``deployments``: the deployment each role scored with. Pure."""
    figures: dict[str, Any] = {
        "data": rule.data,
        "since": since.isoformat(),
        "jobs": {
            role: (run.as_dict() if run is not None else {"job": jobs[role], "status": "missing"})
            for role, run in runs.items()
        },
    }
    missing = sorted(role for role, run in runs.items() if run is None)
    if missing:
        names = ", ".join(f"{role} job {jobs[role]}" for role in missing)
        return CompareVerdict("fail", f"comparison on {rule.data} failed: the workspace has no {names}", figures)
    ended = {role: run for role, run in runs.items() if run is not None}
    running = sorted(role for role, run in ended.items() if not run.terminal)
    if running:
        said = ", ".join(f"{role} {ended[role].status}" for role in sorted(ended))
        if now - since > rule.timeout:
            why = f"comparison on {rule.data} failed: not done after {span(rule.timeout)} ({said})"
            return CompareVerdict("fail", why, figures)
        return CompareVerdict("wait", f"comparison on {rule.data}: {said}", figures)
    failed = sorted(role for role, run in ended.items() if run.status.lower() != "completed")
    if failed:
        said = ", ".join(f"the {role}'s job {ended[role].name} ended {ended[role].status}" for role in failed)
        return CompareVerdict("fail", f"comparison on {rule.data} failed: {said}", figures)
    unread = sorted(role for role, run in ended.items() if run.note)
    if unread:  # no metrics to judge (no such step, no MLflow run): the comparison could not judge, not a loss
        said = "; ".join(f"the {role}'s {ended[role].note}" for role in unread)
        return CompareVerdict("fail", f"comparison on {rule.data} failed: {said}", figures)
    cand = ended[CANDIDATE]
    champ = ended.get(CHAMPION)
    verdict = gate.evaluate(
        rule,
        cand.metrics or {},
        None if champ is None else champ.metrics or {},
        candidate_name=f"candidate {deployments[CANDIDATE]}",
        champion_name=f"champion {deployments.get(CHAMPION)}",
    )
    figures["gate"] = verdict.as_dict()
    where = f"comparison on {rule.data}"
    if verdict.passed:
        return CompareVerdict("promote", f"{where}: {verdict.why}", figures)
    return CompareVerdict("reject", f"{where}: not switched: {verdict.why}", figures)


def since_of(compare: Mapping[str, Any]) -> datetime:
    """When a comparison's jobs were started (its progress's ``at``)."""
    at = from_iso(str(compare.get("at") or ""))
    if at is None:  # pragma: no cover - a comparison is always committed with its start
        raise PermanentError("a batch comparison has no start time; it cannot be judged")
    return at


def start(runs: BatchRuns | None, endpoint: str, pending: Transition) -> dict[str, str]:
    """Start (or adopt) the batch jobs ``pending`` (a ``compare`` transition) names, each scoring its
    data with its role's deployment; the jobs' names as Azure ML gave them. Raises PermanentError when
    a job cannot be started (the comparison fails, recorded), TransientError for the next pass."""
    if runs is None:
        raise PermanentError("this backend cannot invoke batch deployments (a dry run)")
    jobs = dict(pending.details.get("jobs") or {})
    deployments = dict(pending.details.get("deployments") or {})
    data = str(pending.details.get("data") or "")
    return {role: runs.invoke_batch(endpoint, deployments[role], data, job) for role, job in sorted(jobs.items())}


def cancel_running(runs: BatchRuns | None, compare: Mapping[str, Any] | None) -> dict[str, str]:
    """The comparison's jobs still running when its rollout ends without their verdict (a timeout, one
    job failed, an operator's rollback) are canceled: what was done to each job, by role ({} without a
    comparison). A refusal is said, not raised: the rollout's end stands."""
    jobs = dict((compare or {}).get("jobs") or {})
    if runs is None or not jobs:
        return {}
    done: dict[str, str] = {}
    for role, job in sorted(jobs.items()):
        try:
            done[role] = f"{job} canceled" if runs.cancel_batch(str(job)) else f"{job} ended already"
        except PermanentError as exc:
            done[role] = f"{job} not canceled: {exc}"
    return done
