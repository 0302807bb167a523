"""Whether a retrain is worth submitting, judged on facts read just before it is (pure).

A retrain's plan names its checks (:attr:`handlers.plans.JobPlan.checks`); the Jobs port reads the facts
they need (:class:`RetrainFacts`, ``Jobs.retrain_facts``) and :func:`judge` says go, or why not:

- ``breach`` (every retrain a model monitor's breach starts): the run its event names, read back from the
  workspace (:mod:`handlers.told`): no such run, one not ``Completed``, without the breach tag its event names,
  or under a monitor run of another experiment is a recorded skip with ``guard: not_as_told``, judged first
  (anyone holding the events key writes a breach event). A backend that reads no workspace (the dry run)
  cannot check it and its record says so (``breach.checked: false``).

- ``veto`` (``drift.classes``, :mod:`handlers.signal_rules`): a signal of class ``veto`` breached in the
  same monitor run as the breach that asked for the retrain (a data-quality breach: the monitor run's
  data is suspect). The retrain is a recorded skip, published as an incident.
- ``worthiness`` (``retrain.worthiness``, on by default for drift and alerts): the champion's lineage
  (its version's job and the data-asset versions that job read) against each data asset's latest
  version. The champion is the version the policy's online endpoint serves (``{"endpoint": ...}`` in the
  check; its deployment with the most live traffic, as the gate and ``retrain.max_age`` read it); without
  an endpoint, or when it serves no version of the model, the latest registered version, and the record's
  ``notes`` say so. When none has a newer version, the retrain would train on exactly what the champion saw: a
  recorded skip that says so. When the lineage cannot be read (no champion, no job, no data-asset
  input), the retrain goes ahead and its record says why it was not judged.

A skip here gives the cooldown and budget its reservation took back: nothing ran.

``retrain backtest`` judges a draft's checks again on what a record kept of the facts
(:func:`recorded_facts`): the same decision, at the same moment, read the same workspace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from handlers.plans import JobPlan

NOT_AS_TOLD = "not_as_told"  # the guard of a skip whose run the workspace does not bear out: judged again
GIVES_BACK = "gives_back"  # a skipped retrain's record: the cooldown and budget its reservation took are given back


@dataclass(frozen=True)
class RetrainFacts:
    """What the workspace says for a plan's checks. ``breaches``: the monitor run's breached signals
    (lower-case name -> the breach text), None when not read; ``monitor_run``: the run read for them.
    ``veto_unread``: why that run could not be read (the retrain is then not submitted).
    ``breach_misstated``: why the breach's run is not what its event told of (None: it is, or not read);
    ``breach_unread``: why it was not read (a backend without a workspace).
    ``champion``: ``name:version``; ``trained_on``: each data asset its job read -> that version
    (None: the lineage could not be read, ``notes`` say why); ``latest``: each of those assets' latest version;
    ``notes`` also say when the champion is not the served version (no endpoint, or it serves none of the model)."""

    breaches: dict[str, str] | None = None
    monitor_run: str | None = None
    veto_unread: str | None = None  # why the monitor run could not be read (then nothing is trained on it)
    champion: str | None = None
    trained_on: dict[str, str] | None = None
    latest: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    breach_misstated: str | None = None
    breach_unread: str | None = None


@dataclass(frozen=True)
class Judged:
    """``skip``: why the retrain is not submitted (None: it goes ahead); ``details``: what the record keeps;
    ``guard``: the skip's guard when it is not final (:data:`NOT_AS_TOLD`)."""

    skip: str | None
    details: dict[str, Any]
    guard: str | None = None


def judge(plan: JobPlan, facts: RetrainFacts) -> Judged:
    """Go, or the reason it is not worth it, with what was judged (for the record and ``explain``)."""
    checks: Mapping[str, Any] = plan.checks
    details: dict[str, Any] = {}
    told = checks.get("breach")
    if isinstance(told, Mapping):
        run = told.get("run")
        if facts.breach_misstated:
            details["breach"] = {"run": run, "checked": True, "misstated": facts.breach_misstated}
            why = f"{facts.breach_misstated}; judged again when another event tells of the run"
            return Judged(why, details, guard=NOT_AS_TOLD)
        details["breach"] = {"run": run, "checked": not facts.breach_unread}
        if facts.breach_unread:
            details["breach"]["unread"] = facts.breach_unread
    veto = checks.get("veto")
    if isinstance(veto, Mapping) and facts.veto_unread:
        details["veto"] = {
            "run": veto.get("run"),
            "checked": list(veto.get("signals") or []),
            "unread": facts.veto_unread,
        }
        return Judged(
            f"not retrained: the monitor run of the breach ({veto.get('run')}) could not be read to check its veto "
            f"signal(s) {', '.join(map(repr, veto.get('signals') or []))}: {facts.veto_unread}; nothing is trained on "
            "a monitor run that was not checked",
            details,
        )
    if isinstance(veto, Mapping) and facts.breaches is not None:
        hits = [s for s in veto.get("signals") or [] if str(s).lower() in facts.breaches]
        run = facts.monitor_run or veto.get("run")
        found = sorted(facts.breaches)[:50]  # every signal breached in that run: a backtest judges another veto on it
        details["veto"] = {"run": run, "checked": list(veto.get("signals") or []), "breached": hits, "found": found}
        if hits:
            details["incident"] = "veto"
            return Judged(
                f"not retrained: signal(s) {', '.join(map(repr, hits))} of class veto breached in the same monitor "
                f"run ({run}): its data is suspect, so no retrain on it (models.{plan.model}.drift.classes); "
                "published as an incident to look into",
                details,
            )
    if "worthiness" not in checks:
        return Judged(None, details)
    if not facts.trained_on:
        why = "; ".join(facts.notes) or "the champion's lineage names no data asset version"
        details["worthiness"] = {"judged": False, "why": why, "champion": facts.champion}
        return Judged(None, details)
    newer = {name: facts.latest[name] for name, v in facts.trained_on.items() if facts.latest.get(name, v) != v}
    details["worthiness"] = {
        "judged": True,
        "champion": facts.champion,
        "trained_on": dict(facts.trained_on),
        "latest": dict(facts.latest),
        "newer": newer,
        **({"notes": list(facts.notes)} if facts.notes else {}),
    }
    if newer:
        return Judged(None, details)
    seen = ", ".join(f"{name}:{version}" for name, version in sorted(facts.trained_on.items()))
    return Judged(
        f"not worth it: the champion {facts.champion} was trained on {seen}, and no newer version exists; "
        f"retraining would learn from the same data (retrain.worthiness: false in models.{plan.model} retrains anyway)",
        details,
    )


def recorded_facts(plan: JobPlan, details: Mapping[str, Any]) -> tuple[RetrainFacts, list[str]]:
    """The facts ``plan``'s checks need, as a record of the same decision kept them (the ``veto`` and
    ``worthiness`` details :func:`judge` wrote), and the checks they cannot answer: nothing was read for
    them (the recorded decision was refused by a guard first, or its policy had no such check), or the
    record names the breaches of some of the signals only (written before ``found`` was kept). A check
    listed missing matters only when the others let the retrain go (a veto that decided was read first)."""
    missing: list[str] = []
    breaches: dict[str, str] | None = None
    run: str | None = None
    unread: str | None = None
    veto = plan.checks.get("veto")
    kept = details.get("veto")
    if isinstance(veto, Mapping) and not isinstance(kept, Mapping):
        missing.append("veto")
    elif isinstance(veto, Mapping) and isinstance(kept, Mapping):
        run = str(kept.get("run") or "") or None
        if kept.get("unread"):
            unread = str(kept["unread"])
        else:
            found = kept.get("found")
            if not isinstance(found, list):  # only the signals it checked were kept
                checked = {str(s).lower() for s in kept.get("checked") or []}
                if any(str(s).lower() not in checked for s in veto.get("signals") or []):
                    missing.append("veto")
                found = list(kept.get("breached") or [])
            breaches = {str(s).lower(): "breached, as recorded" for s in found}
    champion: str | None = None
    trained_on: dict[str, str] | None = None
    latest: dict[str, str] = {}
    notes: tuple[str, ...] = ()
    judged = details.get("worthiness")
    if "worthiness" in plan.checks and not isinstance(judged, Mapping):
        missing.append("worthiness")
    elif "worthiness" in plan.checks and isinstance(judged, Mapping):
        champion = None if judged.get("champion") is None else str(judged["champion"])
        if judged.get("judged"):
            trained_on = {str(k): str(v) for k, v in (judged.get("trained_on") or {}).items()}
            latest = {str(k): str(v) for k, v in (judged.get("latest") or {}).items()}
            notes = tuple(str(n) for n in judged.get("notes") or [])
        else:
            notes = (str(judged.get("why") or "not judged when it was recorded"),)
    told = details.get("breach")
    misstated = str(told.get("misstated") or "") or None if isinstance(told, Mapping) else None
    unchecked = str(told.get("unread") or "") or None if isinstance(told, Mapping) else None
    facts = RetrainFacts(breaches, run, unread, champion, trained_on, latest, notes, misstated, unchecked)
    return facts, missing
