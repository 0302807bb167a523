"""Query guards of rollouts (``deploy.rollout.guards.queries``, :mod:`handlers.guard_rules`): custom
KQL over Log Analytics or Application Insights, one number per deployment, judged at each look of a
step beside the health verdict. Not the *slot* guards of :mod:`handlers.guards`.

:class:`GuardQueries` is the port (the adapter: ``function_app/adapters/monitor_guards.py``);
:func:`read` asks it for the candidate's value and, when a guard compares, the baseline's, over the
step's window, an error becoming a reading that says so; :func:`judge` is the pure rule; :func:`apply`
lays the result over the health verdict:

- a **breach** (a value beyond ``min``/``max``, or worse than the baseline's by more than the margin)
  rolls back, at any look, with the figures;
- a guard **unverified** (its query failed or returned nothing) keeps the step from advancing: a step
  the health check would advance is held (recorded once per step) until it verifies, and at
  ``max_bake`` rolled back: nothing is promoted unverified;
- otherwise the health verdict stands, and the figures go with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from handlers.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from handlers.analysis import Verdict
    from handlers.guard_rules import QueryGuard


@dataclass(frozen=True)
class GuardReading:
    """One guard's number for one deployment over ``since``..``until`` (None: nothing), or the
    ``error`` that kept it from being read; ``request``: the query sent, ``workspace``: where."""

    guard: str
    deployment: str
    value: float | None
    request: str = ""
    workspace: str = ""
    error: str | None = None


class GuardQueries(Protocol):
    """Where query guards are read."""

    def value(
        self, name: str, guard: QueryGuard, endpoint: str, deployment: str, since: datetime, until: datetime
    ) -> GuardReading:
        """The guard's number for ``deployment``. Raises TransientError or PermanentError when it
        cannot be had (:func:`read` records either as the reading's ``error``)."""
        ...


def read(
    source: GuardQueries,
    guards: Mapping[str, QueryGuard],
    endpoint: str,
    candidate: str,
    baseline: str | None,
    since: datetime,
    until: datetime,
) -> dict[str, tuple[GuardReading, GuardReading | None]]:
    """Each guard's reading of the candidate and, when it compares with a baseline that serves in
    this step (``baseline`` not None), of the baseline."""

    def one(name: str, guard: QueryGuard, deployment: str) -> GuardReading:
        try:
            return source.value(name, guard, endpoint, deployment, since, until)
        except (TransientError, PermanentError) as exc:
            return GuardReading(name, deployment, None, error=str(exc)[:1000])

    out: dict[str, tuple[GuardReading, GuardReading | None]] = {}
    for name, guard in guards.items():
        base = one(name, guard, baseline) if guard.baseline is not None and baseline is not None else None
        out[name] = (one(name, guard, candidate), base)
    return out


@dataclass(frozen=True)
class GuardCheck:
    """One guard's judgement: ``status`` ok, breach or unverified, ``why`` with the numbers."""

    guard: str
    status: str
    why: str
    candidate: float | None
    baseline: float | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    request: str = ""
    workspace: str = ""


def _limits(guard: QueryGuard) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in (("min", guard.min), ("max", guard.max)) if v is not None}
    if guard.baseline is not None:
        out["baseline"] = {"margin": guard.baseline.margin, "higher_is_better": guard.baseline.higher_is_better}
    return out


def check(name: str, guard: QueryGuard, cand: GuardReading, base: GuardReading | None) -> GuardCheck:
    """One guard on its readings. Pure."""

    def result(status: str, why: str, b: float | None = None) -> GuardCheck:
        return GuardCheck(name, status, why, cand.value, b, _limits(guard), cand.request, cand.workspace)

    if cand.error is not None:
        return result("unverified", f"guard {name}: the query for {cand.deployment} failed: {cand.error}")
    value = cand.value
    if value is None or not math.isfinite(value):
        return result("unverified", f"guard {name}: the query returned no number for {cand.deployment}")
    if guard.min is not None and value < guard.min:
        return result("breach", f"guard {name}: {cand.deployment} {value:g} is below min {guard.min:g}")
    if guard.max is not None and value > guard.max:
        return result("breach", f"guard {name}: {cand.deployment} {value:g} is above max {guard.max:g}")
    rel = guard.baseline
    if rel is None:
        return result("ok", f"guard {name}: {value:g} within its limits")
    if base is None:
        return result("ok", f"guard {name}: {value:g} within its limits; no baseline serves in this step to compare")
    if base.error is not None:
        return result("unverified", f"guard {name}: the query for the baseline {base.deployment} failed: {base.error}")
    b = base.value
    if b is None or not math.isfinite(b):
        return result("unverified", f"guard {name}: the query returned no number for the baseline {base.deployment}")
    allowed = rel.margin * abs(b)
    worse = b - value if rel.higher_is_better else value - b
    if worse > allowed:
        direction = "below" if rel.higher_is_better else "above"
        return result(
            "breach",
            f"guard {name}: {cand.deployment} {value:g} is {worse:g} {direction} the baseline {base.deployment}'s "
            f"{b:g}, more than the margin {rel.margin:g} of it ({allowed:g})",
            b,
        )
    return result("ok", f"guard {name}: {value:g} against the baseline's {b:g}, within the margin {rel.margin:g}", b)


def judge(
    guards: Mapping[str, QueryGuard], readings: Mapping[str, tuple[GuardReading, GuardReading | None]]
) -> list[GuardCheck]:
    """Every guard on its readings, in the policy's order. Pure."""
    return [check(name, guard, *readings[name]) for name, guard in guards.items()]


def apply(verdict: Verdict, checks: list[GuardCheck], past_max_bake: bool, *, shadow: bool = False) -> Verdict:
    """The health ``verdict`` with the guards' ``checks`` laid over it (see the module's docstring);
    ``past_max_bake``: the step has waited its longest (``RolloutRule.longest_bake``). In the shadow
    stage (``shadow``) only a breach counts: a mirrored request's answer reaches no client, so a signal
    of what clients did with it cannot exist yet, and an unverified guard does not hold the stage. Pure."""
    breached = [c for c in checks if c.status == "breach"]
    unverified = [c for c in checks if c.status == "unverified"]
    if verdict.next == "rollback" or not checks:
        return verdict
    if breached:
        why = "; ".join(c.why for c in breached)
        return replace(verdict, status="unhealthy", next="rollback", why=f"{why} (health: {verdict.why})")
    if unverified and not shadow and verdict.next in ("advance", "hold"):
        why = "; ".join(c.why for c in unverified)
        if verdict.next == "hold":  # waiting for traffic already (on_no_traffic: hold): it waits on
            return replace(verdict, why=f"{verdict.why}; {why}")
        if past_max_bake:
            return replace(
                verdict,
                status="unverified",
                next="rollback",
                why=f"{why}, and the step has waited its max_bake: nothing is promoted unverified (health: {verdict.why})",
            )
        return replace(
            verdict, next="hold", why=f"{why}: the step does not advance until it verifies (health: {verdict.why})"
        )
    return verdict


def figures(checks: list[GuardCheck]) -> list[dict[str, Any]]:
    """The checks as the decision records keep them."""
    return [asdict(c) for c in checks]


class Unconfigured:
    """The guard source of a service with nowhere to query: every guard is unverified and says why."""

    def value(
        self, name: str, guard: QueryGuard, endpoint: str, deployment: str, since: datetime, until: datetime
    ) -> GuardReading:
        raise PermanentError("no query guard source is configured (RETRAIN_LOG_ANALYTICS_WORKSPACE_ID)")


def look(
    source: GuardQueries | None,
    guards: Mapping[str, QueryGuard],
    endpoint: str,
    candidate: str,
    baseline: str | None,
    verdict: Verdict,
    past_max_bake: bool = False,
    *,
    shadow: bool = False,
) -> tuple[Verdict, list[GuardCheck]]:
    """One look of the query guards at a step (or the shadow stage: ``shadow``, see :func:`apply`)
    already judged by ``verdict``, over its window (``verdict.since``..``verdict.until``): the verdict
    they leave, and their checks. ``baseline``: the deployment to compare with, None when it serves
    nothing in this step."""
    if not guards or verdict.next == "rollback":
        return verdict, []
    since, until = datetime.fromisoformat(verdict.since), datetime.fromisoformat(verdict.until)
    checks = judge(guards, read(source or Unconfigured(), guards, endpoint, candidate, baseline, since, until))
    return apply(verdict, checks, past_max_bake, shadow=shadow), checks
