"""The reconciler's rollout pass: one transition per rollout flight, never a wait.

For a model whose ``rollout`` flight is ``submitted`` (a candidate deployment was started at 0%),
each reconciler pass does at most one of: wait for the deployment to be provisioned (a failed one
is rolled back, recorded); give the candidate its first step; judge the step so far, on the window
from its start to the health source's lag before now, against the baseline (the deployment that had
the most traffic before the rollout) over the same window, and go to the next step, promote it (at
100%) or roll the endpoint back to the traffic it had before the rollout. Before the bake is over a
step is only ever rolled back, and only when its failures alone decide it (fail fast,
:func:`handlers.analysis.judge`), or when a query guard breaches; a query guard that cannot be
verified keeps the step from advancing (:mod:`handlers.rollout.query_guards`). A paused rollout is
left as it is. The rules are pure
(:mod:`handlers.rollout.progress`, :mod:`handlers.analysis`); this module reads the facts through the ports,
decides a transition and writes it ahead into the ledger; the executor carries it out
(:meth:`handlers.executor.Executor.transition`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from handlers import analysis
from handlers.analysis import HealthSource, Reading
from handlers.errors import PermanentError
from handlers.executor import Executor
from handlers.ports import Ledger
from handlers.records import Flight, from_iso, iso, span
from handlers.rollout import query_guards, smoke, traffic, writeahead
from handlers.rollout.progress import RolloutProgress, Transition
from handlers.rollout.query_guards import GuardQueries
from handlers.rollout.traffic import fmt
from handlers.workspace_ports import Deployments

if TYPE_CHECKING:
    from handlers.freeze import Frozen
    from handlers.rollout_rules import RolloutRule

log = logging.getLogger(__name__)


class RolloutStepper:
    """Moves one rollout flight on by one transition (:meth:`advance`). ``rule(model)`` is the
    model's rollout rule; ``sources`` the health sources by name (``metrics``, ``logs``), of which a
    model reads the one its policy names (``deploy.rollout.health.source``), else ``default_source``
    (the setting ``RETRAIN_HEALTH_SOURCE``). A source that is not configured reads "no data", says
    why, and the rule's ``on_no_traffic`` decides."""

    def __init__(
        self,
        ledger: Ledger,
        deployments: Deployments,
        executor: Executor,
        rule: Callable[[str], RolloutRule],
        sources: Mapping[str, HealthSource] | None = None,
        default_source: str = "metrics",
        guards: GuardQueries | None = None,
        frozen: Callable[[str, str, datetime], Frozen | None] | None = None,
    ) -> None:
        self.frozen = frozen  # (model, action, now): why the model's rollouts may not move forward now
        self.ledger = ledger
        self.deployments = deployments
        self.executor = executor
        self.rule = rule
        self.sources = dict(sources or {})
        self.default_source = default_source
        self.guards = guards  # where the query guards (deploy.rollout.guards.queries) are read

    def advance(self, model: str, flight: Flight, now: datetime) -> dict[str, Any]:
        """One transition of ``flight``; what it did, for the report. Raises TransientError (and
        PermanentError from a read) for the reconciler to defer: nothing is decided on a guess."""
        endpoint, _, deployment = str(flight.job).partition("/")
        entry: dict[str, Any] = {"model": model, "decision": flight.decision, "deployment": str(flight.job)}
        progress = RolloutProgress.of(flight)
        if progress is not None and progress.pending is not None:
            return {**entry, **self.executor.transition(model, flight, progress.pending, now)}
        if progress is not None and progress.paused:
            return {**entry, "state": "paused", "step": progress.step, "paused": progress.paused}
        rule = self.rule(model)
        if progress is not None and progress.step < 0 and progress.mirror:
            return {**entry, **self._shadow(model, flight, deployment, rule, progress, now)}
        if progress is None or progress.step < 0:
            return {**entry, **self._start(model, flight, endpoint, deployment, rule, now, progress)}
        step, steps = progress.step, list(progress.steps)
        started = progress.started
        if started is None:  # pragma: no cover - a step is always written with its start
            raise PermanentError(f"rollout of {flight.job} has no step start; it cannot be judged")
        entry.update(step=step, traffic=progress.traffic)
        original = dict(progress.original or {})
        baseline = analysis.baseline_of(original, deployment)
        verdict = self._judge(rule, endpoint, deployment, baseline, started, now, from_iso(flight.since))
        if verdict is None:  # the source's lag has not passed since the step began: nothing to read yet
            return {**entry, "state": "baking", "until": iso(started + rule.bake)}
        serving = baseline if baseline is not None and (progress.traffic or {}).get(baseline, 0) > 0 else None
        verdict, checks = query_guards.look(
            self.guards, rule.guards.queries, endpoint, deployment, serving, verdict, now >= started + rule.longest_bake
        )
        checked = query_guards.figures(checks) or None  # the query guards' figures, in every record of this look
        log.info(
            "rollout %s model=%s step %d (%d%%) %s look: %s -> %s: %s",
            flight.job,
            model,
            step + 1,
            steps[step],
            "final" if verdict.final else "interim",
            verdict.status,
            verdict.next,
            verdict.why,
        )
        if verdict.next == "wait":
            count = smoke.synthetic_load(rule, progress.step, progress.loaded, verdict)
            if count:  # the bake is over with too few requests: synthetic ones, once (deploy.rollout.smoke.load)
                why = f"{verdict.why}; synthetic load: {count} sample request(s) sent to the candidate"
                reason = f"rollout of {flight.job} {progress.at}: {why}"
                pending = Transition.of(model, flight, "load", step, step, None, reason, requests=count)
                return {**entry, **self._write_ahead(model, flight, pending, now)}
            state = "baking" if not verdict.final else "waiting_for_traffic"
            waiting = {"guards": checked} if checked else {}
            return {**entry, "state": state, "until": iso(started + rule.bake), "why": verdict.why, **waiting}
        if verdict.next == "hold" and progress.held == step:
            return {**entry, "state": "held", "why": verdict.why}
        at = progress.at
        health = verdict.as_dict()
        if verdict.next == "hold":
            pending = Transition.of(
                model,
                flight,
                "hold",
                step,
                step,
                None,
                f"rollout of {flight.job} held {at}: {verdict.why}",
                health=health,
                guards=checked,
            )
        elif verdict.next == "rollback":
            pending = Transition.of(
                model,
                flight,
                "rollback",
                step,
                step,
                original,
                f"rollout of {flight.job} rolled back {at}: {verdict.why}; traffic back to {fmt(original)}",
                health=health,
                guards=checked,
            )
        elif step + 1 >= len(steps):
            demoted = sorted(d for d, pct in (progress.original or {}).items() if d != deployment and pct)
            pending = Transition.of(
                model,
                flight,
                "promote",
                step,
                step,
                None,
                f"candidate {flight.job} promoted: healthy {at}: {verdict.why}",
                health=health,
                guards=checked,
                endpoint=endpoint,
                demoted=demoted,
            )
        else:
            target = traffic.split(original, deployment, steps[step + 1])
            pending = Transition.of(
                model,
                flight,
                "step",
                step + 1,
                step,
                target,
                f"rollout of {flight.job}: healthy {at} ({verdict.why}); step {step + 2} of {len(steps)}: "
                f"traffic {fmt(progress.traffic)} -> {fmt(target)}",
                health=health,
                guards=checked,
            )
        return {**entry, **self._write_ahead(model, flight, pending, now)}

    def source_of(self, rule: RolloutRule) -> str:
        """The name of the health source a model's step is read from."""
        return rule.health.source_or(self.default_source)

    def _judge(
        self,
        rule: RolloutRule,
        endpoint: str,
        candidate: str,
        baseline: str | None,
        started: datetime,
        now: datetime,
        rollout_since: datetime | None = None,
    ) -> analysis.Verdict | None:
        """The verdict on the step so far, read from the model's source; None while the step's window
        is empty (the source's lag has not passed since the step began). The read reaches back to
        the rollout's start (``rollout_since``, at most :func:`handlers.analysis.reach` before the
        step): the earlier steps' minutes count in the comparison with the baseline; and the
        baseline's, ``health.history`` further (its minutes before the rollout: its calm rate)."""
        name = self.source_of(rule)
        since, until = analysis.window(rule.health, started, now, name)
        if until <= since:
            return None
        first = analysis.reach(rule, started, rollout_since)
        source = self.sources.get(name)
        if source is None:
            cand, base = _no_data(name, endpoint, candidate, baseline, first, until)
        else:
            history = rule.health.history
            before = first - history if baseline is not None and history > timedelta(0) else None
            cand, base = source.read(endpoint, candidate, baseline, first, until, before=before)
        read_since, read_until = from_iso(cand.since), from_iso(cand.until)
        step_start = max(since, read_since) if read_since else since
        baked = max(read_until - step_start, timedelta(0)) if read_until else until - since  # what was read
        step_since = iso(started.replace(second=0, microsecond=0)) if first < since else None
        return analysis.judge(rule, cand, base, baked, fail_fast=True, step_since=step_since)

    def _start(
        self,
        model: str,
        flight: Flight,
        endpoint: str,
        deployment: str,
        rule: RolloutRule,
        now: datetime,
        progress: RolloutProgress | None = None,
    ) -> dict[str, Any]:
        start = RolloutProgress(endpoint, deployment, tuple(rule.steps))
        waiting = writeahead.unprovisioned(
            self.deployments, model, flight, endpoint, deployment, "the endpoint's traffic was never changed"
        )
        if isinstance(waiting, Transition):
            return self._write_ahead(model, flight, waiting, now, start)
        if waiting is not None:
            return waiting
        if rule.smoke is not None and (progress is None or progress.smoked is None):
            # before any traffic: the executor invokes the candidate (and the champion, to compare); the live
            # deployment (the most traffic) is asked about the requests an outage may have failed
            serving = analysis.baseline_of(traffic.live(self.deployments.endpoint_traffic(endpoint)), deployment)
            champion = serving if rule.smoke.champion is not None else None
            pending = Transition.of(
                model,
                flight,
                "smoke",
                -1,
                -1,
                None,
                f"deployment {flight.job} is provisioned; smoke test at 0% with {rule.smoke.count} sample "
                f"request(s){rule.smoke.where}" + (f", compared with {champion}'s answers" if champion else ""),
                champion=champion,
                live=serving,
                written=iso(now),
                # this very smoke test, not one an operator superseded before it (rollout.supersede.same): the
                # time alone may be the same (a pause and a resume within a millisecond, or one clock tick)
                round=progress.superseded if progress is not None and progress.superseded else None,
            )
            return self._write_ahead(model, flight, pending, now, start)
        original = traffic.live(self.deployments.endpoint_traffic(endpoint))
        start = replace(start, original=original, traffic=original)
        if rule.mirror is not None:  # the shadow stage first: mirrored traffic, none live
            mirror = {deployment: rule.mirror.percent}
            pending = Transition.of(
                model,
                flight,
                "mirror",
                -1,
                -1,
                None,
                f"deployment {flight.job} is provisioned; shadow stage: {fmt(mirror)} of the endpoint's traffic "
                f"mirrored to it for {span(rule.mirror_stage().bake)} (no client sees its answers), live "
                f"traffic stays {fmt(original)}",
                mirror=mirror,
                original=original,
            )
            return self._write_ahead(model, flight, pending, now, start)
        target = traffic.split(original, deployment, rule.steps[0])
        pending = Transition.of(  # from -1: a concurrent pass that started the rollout first wins
            model,
            flight,
            "step",
            0,
            -1,
            target,
            f"deployment {flight.job} is provisioned; step 1 of {len(rule.steps)}: traffic {fmt(original)} -> "
            f"{fmt(target)}",
            original=original,
        )
        return self._write_ahead(model, flight, pending, now, start)

    def _shadow(
        self, model: str, flight: Flight, deployment: str, rule: RolloutRule, progress: RolloutProgress, now: datetime
    ) -> dict[str, Any]:
        """The shadow stage judged so far: the candidate's requests (all of them mirrored: Azure ML
        never gives one deployment live and mirrored traffic at once) against the baseline's, over
        the same window, by the step's analysis with the mirror's bake. Healthy: the mirror cleared
        and the first step's traffic set, in one request; unhealthy: rolled back, the mirror cleared,
        the live traffic as it was."""
        endpoint = progress.endpoint or str(flight.job).partition("/")[0]
        stage = rule.mirror_stage() if rule.mirror is not None else rule  # a policy without it now: the step's bake
        started = progress.started
        if started is None:  # pragma: no cover - the shadow stage is always written with its start
            raise PermanentError(f"rollout of {flight.job} has no shadow-stage start; it cannot be judged")
        original = dict(progress.original or {})
        entry: dict[str, Any] = {"step": -1, "traffic": progress.traffic, "mirror": progress.mirror}
        baseline = analysis.baseline_of(original, deployment)
        verdict = self._judge(stage, endpoint, deployment, baseline, started, now)
        if verdict is None:
            return {**entry, "state": "mirroring", "until": iso(started + stage.bake)}
        guarded = query_guards.look(
            self.guards, rule.guards.queries, endpoint, deployment, baseline, verdict, shadow=True
        )
        verdict, checked = guarded[0], query_guards.figures(guarded[1]) or None
        log.info(
            "rollout %s model=%s shadow stage %s look: %s -> %s: %s",
            flight.job,
            model,
            "final" if verdict.final else "interim",
            verdict.status,
            verdict.next,
            verdict.why,
        )
        if verdict.next == "wait":
            return {**entry, "state": "mirroring", "until": iso(started + stage.bake), "why": verdict.why}
        if verdict.next == "hold" and progress.held == -1:
            return {**entry, "state": "held", "why": verdict.why}
        at, health, steps = progress.at, verdict.as_dict(), list(progress.steps or rule.steps)
        if verdict.next == "hold":
            why = f"rollout of {flight.job} held {at}: {verdict.why}"
            pending = Transition.of(model, flight, "hold", -1, -1, None, why, health=health, guards=checked)
        elif verdict.next == "rollback":
            pending = Transition.of(
                model,
                flight,
                "rollback",
                -1,
                -1,
                None,
                f"rollout of {flight.job} rolled back {at}: {verdict.why}; mirror cleared, its traffic was never "
                f"live (live traffic stays {fmt(original)})",
                mirror={},
                health=health,
                guards=checked,
            )
        else:
            target = traffic.split(original, deployment, steps[0])
            pending = Transition.of(
                model,
                flight,
                "step",
                0,
                -1,
                target,
                f"rollout of {flight.job}: healthy {at} ({verdict.why}); mirror cleared; step 1 of {len(steps)}: "
                f"traffic {fmt(original)} -> {fmt(target)}",
                mirror={},
                health=health,
                guards=checked,
            )
        return {**entry, **self._write_ahead(model, flight, pending, now)}

    def _write_ahead(
        self,
        model: str,
        flight: Flight,
        pending: Transition,
        now: datetime,
        start: RolloutProgress | None = None,
    ) -> dict[str, Any]:
        return writeahead.write_ahead(self.ledger, self.executor, self.frozen, model, flight, pending, now, start)


def _no_data(
    name: str, endpoint: str, candidate: str, baseline: str | None, since: datetime, until: datetime
) -> tuple[Reading, Reading | None]:
    """The readings of a source that is not configured: empty, and saying so."""
    note = f"the {name} health source is not configured; no data"

    def empty(deployment: str) -> Reading:
        return Reading.of(endpoint, deployment, iso(since), iso(until), {}, None, "none", "none", note)

    return empty(candidate), (empty(baseline) if baseline is not None else None)
