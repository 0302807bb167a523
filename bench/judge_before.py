"""The judge the service had before issue 23, kept for the benchmark (bench/rollout_sim.py) to print
beside today's: the candidate's whole window against the baseline's with Fisher's exact test or a
z-test (:func:`handlers.proportions.two_proportion`), absolute limits on the window, and a step
rolled back fast once ``max_error_rate`` of ``min_requests`` have failed. Not used by the service.
"""

from __future__ import annotations

from datetime import timedelta

from handlers.analysis import Verdict
from handlers.proportions import binomial_greater, two_proportion
from handlers.readings import Reading
from handlers.records import span
from handlers.rollout_rules import RolloutRule

# The error budget as it was: half of a step's share at the final look, a twentieth at each interim
# one, shared by the steps below 100% (the last step had absolute limits only).
FINAL_SHARE = 1 / 2
INTERIM_SHARE = 1 / 20
# The default policy as it was: 10-minute bakes (the default is 15 minutes since the first step's 10% of
# 600 requests a minute had to show a 5x-worse candidate whose rate varies minute to minute).
RULE = RolloutRule(bake=timedelta(minutes=10))


def step_alpha(rule: RolloutRule) -> float:
    return (1.0 - rule.health.confidence) / max(1, sum(1 for s in rule.steps if s < 100))


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
