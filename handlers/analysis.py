"""Rollout analysis: a step's candidate judged against the deployment it replaces, as a pure rule.

A health source (:class:`HealthSource`: platform metrics or the endpoint's traffic log) reads what
the candidate and the live (baseline) deployment answered, minute by minute, from the rollout's
start: a histogram of ``(ResponseCode, ModelStatusCode) -> requests`` and a p95 latency each
(:class:`Reading`). The policy's ``failure_codes`` turn the histograms into failures, the way users
feel them (by default 5xx, 408, 424 and a model status >= 500; 429 is throttling, counted apart and
judged by its own limit). :func:`judge` then decides, with every number it used in the verdict
(:class:`handlers.look.Verdict`):

- **against the baseline in the same minutes** (:func:`handlers.strata.compare`): the candidate's
  failures against the baseline's minute by minute, over the step and the earlier steps, so a
  spike both deployments share is no evidence; the variance widened by how much the baseline's own
  failure rate varies from minute to minute; a handful of failures judged by an exact test. At
  100% (no baseline in the step's minutes) the candidate's minutes of the rollout against the
  baseline's earlier minutes (:attr:`handlers.minutes.Table.candidate_minutes`). And its p95 at
  most ``max_latency_ratio`` times the baseline's, the per-minute p95s higher by a rank test;
- **absolute limits** on the candidate's *own* minutes (:class:`handlers.minutes.Table`): not those
  the baseline failed in as well (the endpoint's problem: the step holds while it lasts, up to
  ``max_bake``), nor bursts without a baseline: the failure rate above ``max_error_rate`` by a
  binomial test, the p95 at most ``max_latency_ms``, the share of 429s at most ``max_throttle_rate``;
- **fail fast**: before the bake is over a step is rolled back as soon as its failures alone
  decide it (see :func:`judge`); a handful of failures at a few requests a minute does not.

``confidence`` is the rollout's: a candidate as good as its baseline is rolled back with probability
at most ``1 - confidence`` over the whole rollout, by any rule. The comparison spends half of that
(:data:`handlers.error_budget.COMPARISON_SHARE`); the rest is left to what its level does not bound (the
absolute limits' tests, the bursts of the last step, a variation estimated from few minutes). Its half
is shared out between the steps and the shadow stage (Bonferroni, :func:`handlers.error_budget.step_alpha`),
the last step, which weighs the earlier steps' minutes against the baseline's hour before the rollout
and has power to spare, a quarter share (:data:`handlers.error_budget.LAST_WEIGHT`); inside a step between the
final look (half the step's share) and the interim looks, which use a fixed eightieth of it each (a
Haybittle-Peto boundary: stateless, so a pass needs no memory of earlier looks; within the bound for up
to forty interim looks a step, and far below it in practice, since the looks are cumulative and so
strongly correlated).

Pure: stdlib only, no I/O, no clock read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from handlers.all_failed import ALL_FAILED_LEVEL
from handlers.error_budget import COMPARISON_SHARE, FINAL_SHARE, INTERIM_SHARE, LAST_WEIGHT, step_alpha
from handlers.look import ABSOLUTE_LEVEL, INTERIM_MINUTES, LATENCY_MINUTES, Look, Verdict
from handlers.readings import DEFAULT_FAILURE_CODES, THROTTLED, Code, Counts, Minute, Reading, matches
from handlers.records import span

__all__ = [
    "ABSOLUTE_LEVEL",
    "ALL_FAILED_LEVEL",
    "COMPARISON_SHARE",
    "DEFAULT_FAILURE_CODES",
    "FINAL_SHARE",
    "INTERIM_MINUTES",
    "INTERIM_SHARE",
    "LAST_WEIGHT",
    "LATENCY_MINUTES",
    "THROTTLED",
    "Code",
    "Counts",
    "Minute",
    "Reading",
    "Verdict",
    "judge",
    "matches",
    "step_alpha",
]

if TYPE_CHECKING:
    from handlers.rollout_rules import HealthRule, RolloutRule


class HealthSource(Protocol):
    """Where the readings of a step come from: the candidate's and the baseline's over one window."""

    name: str

    def read(
        self,
        endpoint: str,
        candidate: str,
        baseline: str | None,
        since: datetime,
        until: datetime,
        before: datetime | None = None,
    ) -> tuple[Reading, Reading | None]:
        """The candidate's reading, and the baseline's (None when ``baseline`` is None); with
        ``before``, the baseline's minutes from ``before`` to ``since`` in its reading's ``history``
        (the judge's calm rate). Raises TransientError when the numbers cannot be had now,
        PermanentError when refused."""
        ...


def window(rule: HealthRule, started: datetime, now: datetime, source: str) -> tuple[datetime, datetime]:
    """The window a step is judged on when read from ``source``: from the step's start to the
    source's lag (``rule.lag_for``) before ``now``; empty (since == until) while the lag has not
    passed yet. Its length is what :func:`judge` takes as ``baked``."""
    until = max(started, now - rule.lag_for(source))
    return started, until


def reach(rule: RolloutRule, started: datetime, rollout_since: datetime | None) -> datetime:
    """Where a step's read begins: the rollout's start (its earlier steps' minutes count in the
    comparison with the baseline), at most ``longest_bake`` per step of the rollout before the step
    (a rollout paused for days does not read days); the step's start without ``rollout_since``."""
    if rollout_since is None or rollout_since >= started:
        return started
    return max(rollout_since, started - len(rule.steps) * rule.longest_bake)


def baseline_of(original: Mapping[str, int], candidate: str) -> str | None:
    """The deployment the candidate is judged against: the one that had the most traffic before the
    rollout (ties: the first by name); None when no other deployment had traffic."""
    others = sorted((d for d, p in original.items() if d != candidate and p > 0), key=lambda d: (-original[d], d))
    return others[0] if others else None


def judge(
    rule: RolloutRule,
    candidate: Reading,
    baseline: Reading | None,
    baked: timedelta,
    *,
    fail_fast: bool = True,
    step_since: str | None = None,
) -> Verdict:
    """Judge a step that has baked ``baked`` on the candidate's reading and, over the same window,
    the baseline's (None: no baseline; absolute limits only). The readings may reach back before the
    step (``step_since``, an ISO minute: the minutes before it are earlier steps'): those minutes
    count in the comparison with the baseline only; the limits judge the step's.

    The comparison is made minute by minute (:func:`handlers.strata.compare`): the candidate's
    failures against the baseline's in the same minutes, with the minute-to-minute dispersion
    estimated from them. The absolute limits judge the candidate's *own* minutes
    (:class:`handlers.minutes.Table`): not those the baseline failed in as well (the endpoint's),
    nor, without a baseline, its worst two. While the endpoint fails in the latest minute, the step
    holds (``endpoint_failing``), up to ``longest_bake``; then every minute counts.

    Before the bake is over (an interim look) the answer is ``wait`` (or ``hold``) unless the step's
    failures alone already decide it (``fail_fast``), which rolls it back: every one of at least two
    requests of its own minutes failed while the baseline did not (the exact test at
    :data:`ALL_FAILED_LEVEL`), or every one through minutes the endpoint failed in too while the
    baseline failed fewer of its own in them (:func:`handlers.all_failed.in_outage`: at the level of
    the other minutes while the candidate has not answered one request since its traffic began); its own
    failure rate above ``max_error_rate`` at the interim level; or the comparison rejecting at the
    interim level. Once the bake is over: too few requests bake
    on up to ``longest_bake``, then ``on_no_traffic`` decides; else each limit in turn (the
    absolute failure rate only when a binomial test puts it above ``max_error_rate`` at
    :data:`ABSOLUTE_LEVEL`: a handful of failures does not decide), and healthy advances."""
    look = Look.of(rule, candidate, baseline, baked, step_since)
    early = look.fail_fast() if fail_fast else None  # also while a finished bake waits for traffic
    if early is not None:
        return early
    held = look.held() if fail_fast else None
    if held is not None:
        return held
    if not look.final:
        status = "no_traffic" if look.c.served < rule.health.min_requests else "healthy"
        return look.verdict(
            status,
            "wait",
            f"{look.seen}{look.vs} after {span(baked)} of a {span(rule.bake)} bake: no breach so far; baking on",
        )
    return look.traffic() or look.limits()
