"""Rollout analysis: a step's candidate judged against the deployment it replaces, as a pure rule.

A health source (:class:`HealthSource`: platform metrics or the endpoint's traffic log) reads, over
one window, what the candidate and the live (baseline) deployment answered: a histogram of
``(ResponseCode, ModelStatusCode) -> requests`` and a p95 latency each (:class:`Reading`). The
policy's ``failure_codes`` turn the histogram into failures, the way users feel them (by default
5xx, 408, 424 and a model status >= 500; 429 is throttling, counted apart and judged by its own
limit). :func:`judge` then decides, with every number it used in the verdict:

- **absolute limits**: the failure rate at most ``max_error_rate``, the p95 at most
  ``max_latency_ms``, the share of 429s at most ``max_throttle_rate``;
- **against the baseline**, over the same window: a one-sided test that the candidate fails more
  often than the baseline (:func:`handlers.proportions.two_proportion`), at ``confidence``, and
  its p95 at most ``max_latency_ratio`` times the baseline's;
- **fail fast**: before the bake is over, and before ``min_requests``, a step is rolled back as soon
  as its failures alone decide it (see :func:`judge`).

``confidence`` is the rollout's: a candidate as good as its baseline is rolled back by the
comparison with probability at most ``1 - confidence`` over the whole rollout. That error is shared
out between the steps that have a baseline (Bonferroni), and inside a step between the final look
(half of the step's share) and the interim looks, which use a fixed twentieth of it each (a
Haybittle-Peto boundary: stateless, so a pass needs no memory of earlier looks; within the bound
for up to ten interim looks a step, and far below it in practice, since the looks are cumulative
and so strongly correlated).

Pure: stdlib only, no I/O, no clock read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from handlers.proportions import binomial_greater, two_proportion
from handlers.readings import DEFAULT_FAILURE_CODES, THROTTLED, Code, Counts, Minute, Reading, matches
from handlers.records import span

__all__ = ["DEFAULT_FAILURE_CODES", "THROTTLED", "Code", "Counts", "Minute", "Reading", "judge", "matches"]

if TYPE_CHECKING:
    from handlers.rollout_rules import HealthRule, RolloutRule

# A step's error is spent: half at the final look, a twentieth at each interim look (before the
# bake is over; a Haybittle-Peto boundary), so up to ten interim looks stay within the step's share.
FINAL_SHARE = 1 / 2
INTERIM_SHARE = 1 / 20


class HealthSource(Protocol):
    """Where the readings of a step come from: the candidate's and the baseline's over one window."""

    name: str

    def read(
        self, endpoint: str, candidate: str, baseline: str | None, since: datetime, until: datetime
    ) -> tuple[Reading, Reading | None]:
        """The candidate's reading, and the baseline's (None when ``baseline`` is None). Raises
        TransientError when the numbers cannot be had now, PermanentError when refused."""
        ...


def window(rule: HealthRule, started: datetime, now: datetime, source: str) -> tuple[datetime, datetime]:
    """The window a step is judged on when read from ``source``: from the step's start to the
    source's lag (``rule.lag_for``) before ``now``; empty (since == until) while the lag has not
    passed yet. Its length is what :func:`judge` takes as ``baked``."""
    until = max(started, now - rule.lag_for(source))
    return started, until


def baseline_of(original: Mapping[str, int], candidate: str) -> str | None:
    """The deployment the candidate is judged against: the one that had the most traffic before the
    rollout (ties: the first by name); None when no other deployment had traffic."""
    others = sorted((d for d, p in original.items() if d != candidate and p > 0), key=lambda d: (-original[d], d))
    return others[0] if others else None


# --------------------------------------------------------------------------- the error budget


def step_alpha(rule: RolloutRule) -> float:
    """A step's share of the rollout's error ``1 - confidence``: split over the steps that can have
    a baseline (those below 100%: at 100% the old deployment serves nothing) and the shadow stage,
    if the rollout has one (``deploy.rollout.mirror``: judged against the baseline too)."""
    compared = max(1, sum(1 for s in rule.steps if s < 100) + (1 if rule.mirror is not None else 0))
    return (1.0 - rule.health.confidence) / compared


# --------------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Verdict:
    """The judgement of a step: ``status`` healthy, unhealthy or no_traffic; ``next`` advance,
    rollback, hold or wait; ``why`` in words with the numbers; and every number it used."""

    status: str
    next: str
    why: str
    candidate: Counts
    baseline: Counts | None
    p_value: float | None
    test: str | None
    alpha: float
    latency_ratio: float | None
    baked_s: float
    final: bool
    limits: dict[str, Any]
    source: str
    request: str
    since: str
    until: str
    baseline_request: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def absolute(rule: RolloutRule, candidate: Reading, baked: timedelta) -> Verdict:
    """Today's rule, on the new counting: absolute limits only, judged once the bake is over."""
    return judge(rule, candidate, None, baked, fail_fast=False)


def judge(
    rule: RolloutRule, candidate: Reading, baseline: Reading | None, baked: timedelta, *, fail_fast: bool = True
) -> Verdict:
    """Judge a step that has baked ``baked`` (the window's length) on the candidate's reading and,
    over the same window, the baseline's (None: no baseline; absolute limits only).

    Before the bake is over (an interim look) the answer is ``wait`` unless the failures alone
    already decide the step (``fail_fast``), which rolls it back: fewer than ``min_requests`` whose
    failures exceed ``max_error_rate`` even if every request up to ``min_requests`` succeeded; a
    failure rate above ``max_error_rate`` at the interim level; or the comparison rejecting at the
    interim level. Once the bake is over: too few requests bake on up to ``longest_bake``, then
    ``on_no_traffic`` decides; else each limit in turn, and healthy advances."""
    health = rule.health
    classes = tuple(health.failure_codes)
    c = candidate.counts(classes)
    b = baseline.counts(classes) if baseline is not None else None
    alpha = step_alpha(rule) * FINAL_SHARE
    interim = step_alpha(rule) * INTERIM_SHARE
    final = baked >= rule.bake
    limits = {
        "max_error_rate": health.max_error_rate,
        "min_requests": health.min_requests,
        "max_latency_ms": health.max_latency_ms,
        "max_latency_ratio": health.max_latency_ratio,
        "max_throttle_rate": health.max_throttle_rate,
        "confidence": health.confidence,
        "failure_codes": list(classes),
        "bake_s": rule.bake.total_seconds(),
    }
    baseline_ok = b is not None and b.served >= max(1, health.min_requests)
    compared = baseline_ok and c.served > 0
    p_value, test = two_proportion(c.failures, c.served, b.failures, b.served) if compared and b else (None, None)
    ratio = (
        c.p95_ms / b.p95_ms
        if compared and b is not None and c.p95_ms is not None and b.p95_ms is not None and b.p95_ms > 0
        else None
    )
    notes = [n for n in (candidate.note, baseline.note if baseline else None) if n]
    alone = None  # why the baseline is not compared, when it is not
    if b is None:
        alone = "no baseline deployment: absolute limits only"
    elif not baseline_ok:
        alone = (
            f"baseline {b.deployment} served {b.served} request(s), fewer than min_requests {health.min_requests}: "
            "absolute limits only"
        )
    if alone:
        notes.append(alone)

    def verdict(status: str, nxt: str, why: str) -> Verdict:
        return Verdict(
            status,
            nxt,
            why,
            c,
            b,
            p_value,
            test,
            alpha if final else interim,
            ratio,
            baked.total_seconds(),
            final,
            limits,
            candidate.source,
            candidate.request,
            candidate.since,
            candidate.until,
            baseline.request if baseline is not None else None,
            "; ".join(notes) or None,
        )

    seen = c.text()
    vs = f" vs baseline {b.deployment}: {b.text()}" if compared and b is not None else ""
    limit = health.max_error_rate
    if fail_fast and c.served < health.min_requests and c.failures > limit * health.min_requests:
        return verdict(
            "unhealthy",
            "rollback",
            f"{seen} after {span(baked)}: even if the next {health.min_requests - c.served} request(s) succeed, "
            f"{c.failures} of min_requests {health.min_requests} is above max_error_rate {limit:.1%}",
        )
    if fail_fast and not final and c.failure_rate is not None and c.failure_rate > limit:
        p_abs = binomial_greater(c.failures, c.served, limit)
        if p_abs < interim:
            return verdict(
                "unhealthy",
                "rollback",
                f"{seen} after {span(baked)} is above max_error_rate {limit:.1%} already "
                f"(p={p_abs:.2g} < {interim:.2g}), before the end of the bake",
            )
    if fail_fast and not final and p_value is not None and p_value < interim:
        return verdict(
            "unhealthy",
            "rollback",
            f"{seen}{vs} after {span(baked)}: worse than the baseline already ({test} p={p_value:.2g} < {interim:.2g})",
        )
    if not final:
        status = "no_traffic" if c.served < health.min_requests else "healthy"
        return verdict(
            status, "wait", f"{seen}{vs} after {span(baked)} of a {span(rule.bake)} bake: no breach so far; baking on"
        )
    if (
        health.max_throttle_rate is not None
        and c.requests >= health.min_requests
        and c.throttle_rate is not None
        and c.throttle_rate > health.max_throttle_rate
    ):
        return verdict(
            "unhealthy",
            "rollback",
            f"{c.throttled} of {c.requests} request(s) throttled (429, {c.throttle_rate:.1%}) is above "
            f"max_throttle_rate {health.max_throttle_rate:.1%}",
        )
    if c.served < health.min_requests or c.served == 0:
        why = f"{seen} is less traffic than min_requests {health.min_requests}"
        if candidate.note:
            why += f" ({candidate.note})"
        if baked < rule.longest_bake:
            return verdict("no_traffic", "wait", f"{why}; baking on, up to {span(rule.longest_bake)}")
        action = {"promote": "advance", "hold": "hold", "rollback": "rollback"}[health.on_no_traffic]
        return verdict(
            "no_traffic", action, f"{why} after {span(baked)} of baking; on_no_traffic is {health.on_no_traffic}"
        )
    assert c.failure_rate is not None
    if c.failure_rate > limit:
        return verdict("unhealthy", "rollback", f"{seen} is above max_error_rate {limit:.1%}")
    if p_value is not None and p_value < alpha:
        return verdict(
            "unhealthy",
            "rollback",
            f"{seen}{vs}: worse than the baseline ({test} p={p_value:.2g} < {alpha:.2g}, confidence "
            f"{health.confidence:g} over the rollout)",
        )
    latency = f", p95 {c.p95_ms:.0f} ms" if c.p95_ms is not None else ""
    if health.max_latency_ms is not None and c.p95_ms is not None and c.p95_ms > health.max_latency_ms:
        return verdict(
            "unhealthy",
            "rollback",
            f"p95 latency {c.p95_ms:.0f} ms is above max_latency_ms {health.max_latency_ms:.0f} ({seen})",
        )
    if health.max_latency_ratio is not None and ratio is not None and ratio > health.max_latency_ratio:
        return verdict(
            "unhealthy",
            "rollback",
            f"p95 latency {c.p95_ms:.0f} ms is {ratio:.2f} times the baseline's {b.p95_ms if b else 0:.0f} ms, "
            f"above max_latency_ratio {health.max_latency_ratio:g} ({seen})",
        )
    compared_text = f" (p={p_value:.2g})" if p_value is not None else f" ({alone})" if alone else ""
    return verdict("healthy", "advance", f"{seen}{latency}{vs}{compared_text}: within the policy's limits")
