"""What a breach of an SDK v2 monitor signal decides, by the signal's class (:mod:`handlers.signal_rules`).
Pure: :func:`handlers.decisions.decide` calls it for each model that listens to the breach."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from handlers.envelopes import MONITOR_BREACH_TAG
from handlers.keys import ci_get
from handlers.plans import Decision, Retrain, Skip, skip
from handlers.retrain_plan import retrain
from handlers.signal_rules import class_of, vetoes

if TYPE_CHECKING:
    from handlers.policy import ModelPolicy
    from handlers.signals import DriftDetected


def on_breach(model: str, mp: ModelPolicy, signal: DriftDetected, reason: str) -> Decision:
    """The decision of a v2 breach for ``model`` by its signal's class: a retrain (past the cooldown for
    ``retrain_now``; checked against the veto signals of the same monitor run when the model has any), a
    recorded veto (an incident), or a recorded skip. Each says which signal and class decided."""
    name = signal.signal_name or "?"
    cls = class_of(mp.drift.classes, signal.signal_name)
    said = {"signal": name, "class": cls, "monitor": signal.monitor, "run": str(signal.event_data.get("runId") or "")}
    where = f"models.{model}.drift.classes"
    if cls == "record":
        why = f"breach of signal {name!r} of monitor {signal.monitor!r} recorded: its class is record ({where})"
        return skip(signal.trigger, why, model, signal=said)
    if cls == "veto":
        why = (
            f"breach of signal {name!r} of monitor {signal.monitor!r} (monitor run {said['run'] or '?'}) is a veto "
            f"({where}): no retrain on this monitor run's data; published as an incident to look into"
        )
        return skip(signal.trigger, why, model, signal=said, incident="veto")
    decision = retrain(model, mp, signal.trigger, reason, signal.event_data, {}, workspace=signal.workspace)
    if isinstance(decision, Skip):
        return replace(decision, details={**decision.details, "signal": said})
    told = {MONITOR_BREACH_TAG: str(ci_get(signal.run_tags, MONITOR_BREACH_TAG) or "")}
    return classed(decision, mp, said, {"run": said["run"], "experiment": signal.monitor, "tags": told})


def classed(decision: Retrain, mp: ModelPolicy, said: dict[str, str], told: dict[str, object]) -> Retrain:
    """``decision`` of a breach of class ``said['class']``: urgent for ``retrain_now``, with what its event
    told of the monitor run (``told``: its run, experiment and breach tag, read back before it is submitted)
    and the monitor run's veto signals to check."""
    urgent = said["class"] == "retrain_now"
    checks = {**decision.job.checks, "breach": told}
    veto = vetoes(mp.drift.classes)
    if veto and said.get("run"):
        checks["veto"] = {"run": said["run"], "signals": veto}
    reason = decision.reason + (
        f" (signal {said['signal']!r}, class {said['class']}"
        + (": past the cooldown, within the budget)" if urgent else ")")
    )
    job = replace(decision.job, checks=checks)
    return replace(decision, reason=reason, job=job, urgent=urgent, details={**decision.details, "signal": said})
