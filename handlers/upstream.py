"""Upstream runs as a trigger (``retrain.on.runs``): the completion of a named upstream pipeline or job (an
ingestion or feature job) starts the model's retrain, once per upstream run.

The event only says which run to look at: :func:`confirmed` re-reads the run from the workspace (the Jobs
port) before anything is decided, and :func:`on_upstream` (pure) judges what the workspace reported, never
the event's body: the run must exist, sit in the experiment the policy names, have completed, and carry the
display name and tags the policy asks for. A failed or canceled run starts nothing (recorded), a run this
service started never does (no loops), and the retrain is keyed by the model and the run
(:func:`upstream_decision_id`), so a redelivery, or a second event about the same run, finds the decision
made already and starts nothing more (:attr:`handlers.plans.Retrain.once`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from handlers.errors import PermanentError
from handlers.keys import digest
from handlers.plans import Decision, Retrain, skip
from handlers.retrain_plan import retrain
from handlers.signals import RunFinished, RunSeen, Signal

if TYPE_CHECKING:
    from handlers.policy import ModelPolicy, Policy
    from handlers.trigger_rules import UpstreamRun
    from handlers.workspace_ports import Jobs


def upstream_decision_id(model: str, run_id: str) -> str:
    """The retrain an upstream run starts: keyed by the model and the run, not by the event that told of it."""
    return f"re-{digest('retrain', model, 'upstream', run_id)}"


def listeners(policy: Policy, experiment: str) -> list[tuple[str, ModelPolicy, list[UpstreamRun]]]:
    """The models whose ``retrain.on.runs`` names ``experiment`` (case-insensitive), with those rules."""
    out = []
    for model, mp in policy.models.items():
        rules = [r for r in mp.retrain.on.runs if r.experiment.lower() == experiment.lower()] if mp.retrain else []
        if rules:
            out.append((model, mp, rules))
    return out


def confirmed(signal: Signal, policy: Policy, jobs: Jobs) -> Signal:
    """``signal`` with the run as the workspace reports it (:class:`RunSeen`), when it is a completion that
    an upstream rule may act on: a top-level run, not this service's, of an experiment a model names. Raises
    a TransientError (the event is delivered again); a refusal is what the workspace said (``problem``)."""
    if (
        not isinstance(signal, RunFinished)
        or not signal.succeeded
        or signal.is_child
        or signal.claims_service
        or not listeners(policy, signal.experiment)
    ):
        return signal
    try:
        info = jobs.job_status(signal.run_id)
    except PermanentError as exc:  # refused (a role missing): recorded as a skip that says so
        return replace(signal, seen=RunSeen(False, problem=str(exc)[:500]))
    if info is None:
        return replace(signal, seen=RunSeen(False))
    return replace(signal, seen=RunSeen(True, info.status, info.experiment, info.display_name, dict(info.tags)))


def _matches(rule: UpstreamRun, seen: RunSeen) -> bool:
    if rule.display_name is not None and seen.display_name.casefold() != rule.display_name.casefold():
        return False
    return all(str(seen.tags.get(k)) == v for k, v in rule.tags.items())


def _wanted(rules: list[UpstreamRun]) -> str:
    return "; ".join(
        " and ".join(
            [f"experiment {r.experiment!r}"]
            + ([f"display name {r.display_name!r}"] if r.display_name else [])
            + [f"tag {k}={v!r}" for k, v in r.tags.items()]
        )
        for r in rules
    )


def on_upstream(signal: RunFinished, policy: Policy) -> list[Decision]:
    """One decision per model whose ``retrain.on.runs`` names the run's experiment: its retrain, keyed by
    the run, or a recorded skip that says why not. [] when no model names it (or for a step of a run: the
    top-level run is the one that completes the upstream work)."""
    concerned = listeners(policy, signal.experiment)
    if not concerned or signal.is_child:
        return []
    trigger, run, experiment = signal.trigger, signal.run_id, signal.experiment
    out: list[Decision] = []
    for model, mp, rules in concerned:
        seen = signal.seen
        named = f"models.{model}.retrain.on.runs"
        if signal.claims_service:
            why = f"run {run} was started by this service (it carries its decision tag): it never starts a retrain"
        elif not signal.succeeded:
            why = f"upstream run {run} of experiment {experiment!r} ended {signal.status}: only a completed run starts a retrain"
        elif seen is None:
            why = f"upstream run {run} was not read from the workspace, so it is not acted on (the event alone is not trusted)"
        elif seen.problem:
            why = f"upstream run {run} could not be read from the workspace, so nothing starts: {seen.problem}"
        elif not seen.found:
            why = f"the workspace has no run {run}: the event is not trusted, nothing starts"
        elif seen.experiment.lower() != experiment.lower():
            why = (
                f"the workspace reports run {run} in experiment {seen.experiment[:200]!r}, not {experiment!r} as the "
                "event says: the event is not trusted, nothing starts"
            )
        elif seen.status.lower() != "completed":
            why = f"the workspace reports upstream run {run} {seen.status or 'without a status'}, not Completed: nothing starts"
        elif not any(_matches(r, seen) for r in rules):
            why = (
                f"run {run} (display name {seen.display_name[:200]!r}) is not an upstream run {named} names "
                f"({_wanted(rules)}): recorded, not acted on"
            )
        else:
            label = f" ({seen.display_name[:200]})" if seen.display_name else ""
            reason = f"upstream run {run}{label} of experiment {experiment!r} completed ({named})"
            made = retrain(
                model, mp, trigger, reason, {}, {}, workspace=signal.workspace, did=upstream_decision_id(model, run)
            )
            # the run it starts from, whose creator an approval's four eyes compare (handlers.approval_rules)
            out.append(
                replace(made, details={**made.details, "upstream_run": run[:200]})
                if isinstance(made, Retrain)
                else made
            )
            continue
        out.append(skip(trigger, why, model, upstream_run=run[:200]))
    return out
