"""One look at a step, as the rollout analysis (:func:`handlers.analysis.judge`) takes it: the
readings laid out minute by minute (:class:`handlers.minutes.Table`), compared with the baseline
(:mod:`handlers.strata`), and the verdict with every number it used (:class:`Verdict`).

Pure: stdlib only, no I/O, no clock read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from handlers import all_failed
from handlers.all_failed import ALL_FAILED_BASELINE, ALL_FAILED_LEVEL
from handlers.error_budget import FINAL_SHARE, INTERIM_SHARE, step_alpha
from handlers.minutes import Row, Table, latencies, step_minutes
from handlers.proportions import binomial_greater
from handlers.readings import Counts, Reading
from handlers.records import span
from handlers.strata import Comparison, against_history, compare, mann_whitney_greater

if TYPE_CHECKING:
    from handlers.rollout_rules import RolloutRule

# At the end of a bake, a failure rate above max_error_rate rolls back when a one-sided binomial
# test puts it there at this level (2 failures of 20 at 5%: p=0.26, no; 6 of 20: p=0.0003, yes).
ABSOLUTE_LEVEL = 0.05
# Before the bake is over the comparison decides only over this many minutes with failures in them
# (one bad minute of a rate that varies minute to minute is not enough).
INTERIM_MINUTES = 3
LATENCY_MINUTES = 3  # per-minute p95s each side before the rank test judges the latency ratio


# --------------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Verdict:
    """The judgement of a step: ``status`` healthy, unhealthy, no_traffic or endpoint_failing (the
    baseline fails as much in the same minutes); ``next`` advance, rollback, hold or wait; ``why``
    in words with the numbers; and every number it used: the step's counts, the comparison over the
    minutes (``p_value``, ``test``, ``comparison``: observed, expected, variance, dispersion), the
    per-minute table (``minutes``: at, candidate served and failures, baseline served and
    failures, why a minute was left out of the absolute limits) and the latency test."""

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
    comparison: dict[str, Any] | None = None
    minutes: tuple[tuple[Any, ...], ...] = ()
    latency_p: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _latency_test(cand: Reading, base: Reading | None) -> float | None:
    """The one-sided Mann-Whitney p-value that the candidate's per-minute p95s are higher than the
    baseline's in the same minutes; None with fewer than :data:`LATENCY_MINUTES` minutes each."""
    if base is None:
        return None
    x, y = latencies(cand.minutes), latencies(base.minutes)
    if len(x) < LATENCY_MINUTES or len(y) < LATENCY_MINUTES:
        return None
    return mann_whitney_greater(x, y)[1]


def _rows(rows: list[Row]) -> str:
    return ", ".join(f"{r.at}: {r.failures} of {r.served}, baseline {r.base_failures} of {r.base_served}" for r in rows)


@dataclass
class Look:
    """Everything one look at a step works out before it decides (see :func:`handlers.analysis.judge`)."""

    rule: RolloutRule
    candidate: Reading
    baseline: Reading | None
    baked: timedelta
    table: Table
    step_cand: Reading
    c: Counts
    b: Counts | None
    cmp: Comparison | None
    earlier: bool
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls, rule: RolloutRule, candidate: Reading, baseline: Reading | None, baked: timedelta, step_since: str | None
    ) -> Look:
        classes = tuple(rule.health.failure_codes)
        step_cand = step_minutes(candidate, step_since)
        step_base = step_minutes(baseline, step_since) if baseline is not None else None
        bounded = baked >= rule.longest_bake
        table = Table.of(candidate, baseline, classes, rule.health.max_error_rate, step_since, not bounded)
        earlier = baseline is not None and not any(r.base_served for r in table.step) and bool(table.reference)
        if earlier:  # no baseline in the step's minutes (at 100%): its rate before and earlier in the rollout
            cmp = against_history(table.candidate_minutes, table.reference)
        elif baseline is not None:
            own = [(r.failures, r.served) for r in table.step if r.excused is None and r.served and not r.shared]
            cmp = compare(table.strata, by_minute=bool(candidate.minutes), baseline=table.reference, own=own)
        else:
            cmp = None
        b = step_base.counts(classes) if step_base is not None else None
        look = cls(rule, candidate, baseline, baked, table, step_cand, step_cand.counts(classes), b, cmp, earlier)
        look.notes = look._notes()
        look.latency_p = _latency_test(step_cand, step_base) if look.final else None
        return look

    latency_p: float | None = None

    # ------------------------------------------------------------------ what it works out

    @property
    def final(self) -> bool:
        return self.baked >= self.rule.bake

    @property
    def bounded(self) -> bool:
        """Baked as long as the step may wait: shared minutes count again, on_no_traffic decides."""
        return self.baked >= self.rule.longest_bake

    @property
    def alpha(self) -> float:
        return step_alpha(self.rule, last=self.earlier) * (FINAL_SHARE if self.final else INTERIM_SHARE)

    @property
    def p_value(self) -> float | None:
        return self.cmp.p_value if self.cmp is not None else None

    @property
    def compared(self) -> bool:
        return self.b is not None and self.b.served > 0 and self.c.served > 0

    @property
    def ratio(self) -> float | None:
        c, b = self.c, self.b
        if not self.compared or b is None or c.p95_ms is None or b.p95_ms is None or b.p95_ms <= 0:
            return None
        return c.p95_ms / b.p95_ms

    def _notes(self) -> list[str]:
        notes = [n for n in (self.candidate.note, self.baseline.note if self.baseline else None) if n]
        if self.b is None:
            notes.append("no baseline deployment: absolute limits only")
        elif self.b.served == 0:
            notes.append(f"baseline {self.b.deployment} served no request in the step: absolute limits only")
        if self.table.before:
            failures, served = (sum(x) for x in zip(*self.table.before, strict=True))
            notes.append(
                f"the baseline's {len(self.table.before)} minute(s) before the rollout ({failures} failure(s) of "
                f"{served}) weighed in its calm failure rate and how much it varies"
            )
        shared, burst = self.table.excused_of("shared"), self.table.excused_of("no_baseline")
        if shared:
            notes.append(
                f"{len(shared)} minute(s) the baseline failed in too ({_rows(shared)}) left out of the absolute limits"
            )
        if burst:
            notes.append(f"{len(burst)} burst minute(s) without a baseline ({_rows(burst)}) left out of them")
        return notes

    @property
    def seen(self) -> str:
        served, failures = self.table.own
        own = (
            f"; its own minutes: {failures} of {served}"
            if (served, failures) != (self.c.served, self.c.failures)
            else ""
        )
        return self.c.text() + own

    @property
    def vs(self) -> str:
        if self.earlier and self.cmp is not None and self.baseline is not None:
            when = "before and earlier in the rollout" if self.table.before else "earlier in the rollout"
            return (
                f" vs baseline {self.baseline.deployment} {when}: the candidate's {self.cmp.observed} failure(s) in "
                f"{self.cmp.minutes} minute(s) of the rollout against {self.cmp.expected:.0f} expected"
            )
        return f" vs baseline {self.b.deployment}: {self.b.text()}" if self.compared and self.b is not None else ""

    @property
    def test_text(self) -> str:
        return f"{self.cmp.test} p={self.cmp.p_value:.2g}" if self.cmp is not None else ""

    def verdict(self, status: str, nxt: str, why: str) -> Verdict:
        health = self.rule.health
        limits = {
            "max_error_rate": health.max_error_rate,
            "min_requests": health.min_requests,
            "max_latency_ms": health.max_latency_ms,
            "max_latency_ratio": health.max_latency_ratio,
            "max_throttle_rate": health.max_throttle_rate,
            "confidence": health.confidence,
            "failure_codes": list(health.failure_codes),
            "bake_s": self.rule.bake.total_seconds(),
        }
        return Verdict(
            status,
            nxt,
            why,
            self.c,
            self.b,
            self.p_value,
            self.cmp.test if self.cmp is not None else None,
            self.alpha,
            self.ratio,
            self.baked.total_seconds(),
            self.final,
            limits,
            self.candidate.source,
            self.candidate.request,
            self.step_cand.since,
            self.candidate.until,
            self.baseline.request if self.baseline is not None else None,
            "; ".join(self.notes) or None,
            asdict(self.cmp) if self.cmp is not None else None,
            tuple(tuple(r.as_list()) for r in self.table.rows),
            self.latency_p,
        )

    # ------------------------------------------------------------------ the decisions

    def fail_fast(self) -> Verdict | None:
        """Before the bake is over: a rollback when the step's failures alone already decide it."""
        limit, baked, interim = self.rule.health.max_error_rate, self.baked, self.alpha
        served, failures = self.table.own
        broken = all_failed.alone(served, failures, self.table.own_strata, limit)
        if broken is not None:
            return self.verdict(
                "unhealthy",
                "rollback",
                f"{self.seen} after {span(baked)}: every one of its {served} request(s) failed (p={broken.above:.2g} < "
                f"{ALL_FAILED_LEVEL:g} at max_error_rate {limit:.1%}; p={broken.worse:.2g} < {ALL_FAILED_BASELINE:g} "
                "against the baseline in the same minutes)",
            )
        outage = self._all_failed_in_outage(baked)
        if outage is not None:
            return outage
        if served and failures > limit * served:
            p_abs = binomial_greater(failures, served, limit)
            if p_abs < interim:
                return self.verdict(
                    "unhealthy",
                    "rollback",
                    f"{self.seen} after {span(baked)} is above max_error_rate {limit:.1%} already "
                    f"(p={p_abs:.2g} < {interim:.2g}), before the end of the bake",
                )
        cmp = self.cmp
        if cmp is not None and cmp.p_value < interim and (cmp.minutes >= INTERIM_MINUTES or not self.candidate.minutes):
            return self.verdict(
                "unhealthy",
                "rollback",
                f"{self.c.text()}{self.vs} after {span(baked)}: worse than the baseline already "
                f"({self.test_text} < {interim:.2g})",
            )
        return None

    def _all_failed_in_outage(self, baked: timedelta) -> Verdict | None:
        """Every request of the step failed in minutes the baseline failed in too, while it failed fewer
        of its own there (:func:`handlers.all_failed.in_outage`; whether the candidate answered a request
        is read over every minute of the readings, the earlier steps' too)."""
        found = all_failed.in_outage(self.table.step, all_failed.answered(self.table.rows))
        if found is None or not found.rolls_back:
            return None
        why = (
            "the candidate's failures, not the outage's"
            if found.answered
            else "it has not answered one request since its traffic began: broken, not sharing the outage"
        )
        return self.verdict(
            "unhealthy",
            "rollback",
            f"{self.c.text()} after {span(baked)}: every one of its {found.served} request(s) failed, in minutes "
            f"the endpoint failed in too ({_rows(list(found.shared))}), while the baseline failed "
            f"{found.base_failures} of {found.base_served} in the same minutes (p={found.p_value:.2g} < "
            f"{found.level:g}): {why}",
        )

    def held(self) -> Verdict | None:
        """A hold while the endpoint fails in the latest minute, the baseline as much as the candidate."""
        now_failing = self.table.failing_now if not self.bounded else None
        if now_failing is None:
            return None
        return self.verdict(
            "endpoint_failing",
            "hold",
            f"baseline {now_failing.base_failures} failure(s) of {now_failing.base_served} at {now_failing.at}, "
            f"above max_error_rate {self.rule.health.max_error_rate:.1%} in the same minute as the candidate "
            f"({self.seen}): the endpoint's problem, not the candidate's; the step holds (at most until "
            f"{span(self.rule.longest_bake)} of baking)",
        )

    def traffic(self) -> Verdict | None:
        """Too little traffic: bake on up to ``longest_bake``, then ``on_no_traffic`` decides."""
        health, c = self.rule.health, self.c
        if (
            health.max_throttle_rate is not None
            and c.requests >= health.min_requests
            and c.throttle_rate is not None
            and c.throttle_rate > health.max_throttle_rate
        ):
            return self.verdict(
                "unhealthy",
                "rollback",
                f"{c.throttled} of {c.requests} request(s) throttled (429, {c.throttle_rate:.1%}) is above "
                f"max_throttle_rate {health.max_throttle_rate:.1%}",
            )
        served, _ = self.table.own
        if served >= health.min_requests and served > 0:
            return None
        why = f"{self.seen} is less traffic than min_requests {health.min_requests}"
        if self.candidate.note:
            why += f" ({self.candidate.note})"
        if not self.bounded:
            return self.verdict("no_traffic", "wait", f"{why}; baking on, up to {span(self.rule.longest_bake)}")
        action = {"promote": "advance", "hold": "hold", "rollback": "rollback"}[health.on_no_traffic]
        return self.verdict(
            "no_traffic", action, f"{why} after {span(self.baked)} of baking; on_no_traffic is {health.on_no_traffic}"
        )

    def limits(self) -> Verdict:
        """The final look: each limit in turn; healthy advances."""
        health, c, alpha = self.rule.health, self.c, self.alpha
        limit = health.max_error_rate
        served, failures = self.table.own
        if failures > limit * served:
            p_abs = binomial_greater(failures, served, limit)
            if p_abs < ABSOLUTE_LEVEL:
                return self.verdict(
                    "unhealthy",
                    "rollback",
                    f"{self.seen} is above max_error_rate {limit:.1%} (p={p_abs:.2g} < {ABSOLUTE_LEVEL:g})",
                )
        if self.p_value is not None and self.p_value < alpha:
            return self.verdict(
                "unhealthy",
                "rollback",
                f"{c.text()}{self.vs}: worse than the baseline ({self.test_text} < {alpha:.2g}, confidence "
                f"{health.confidence:g} over the rollout)",
            )
        if health.max_latency_ms is not None and c.p95_ms is not None and c.p95_ms > health.max_latency_ms:
            return self.verdict(
                "unhealthy",
                "rollback",
                f"p95 latency {c.p95_ms:.0f} ms is above max_latency_ms {health.max_latency_ms:.0f} ({c.text()})",
            )
        ratio, latency_p = self.ratio, self.latency_p
        slower = latency_p is None or latency_p < alpha
        if health.max_latency_ratio is not None and ratio is not None and ratio > health.max_latency_ratio and slower:
            tested = f"; per-minute p95s higher, Mann-Whitney p={latency_p:.2g} < {alpha:.2g}" if latency_p else ""
            return self.verdict(
                "unhealthy",
                "rollback",
                f"p95 latency {c.p95_ms:.0f} ms is {ratio:.2f} times the baseline's "
                f"{self.b.p95_ms if self.b else 0:.0f} ms, above max_latency_ratio {health.max_latency_ratio:g}"
                f"{tested} ({c.text()})",
            )
        latency = f", p95 {c.p95_ms:.0f} ms" if c.p95_ms is not None else ""
        compared = f" ({self.test_text})" if self.cmp is not None else f" ({self.notes[-1]})" if self.notes else ""
        return self.verdict(
            "healthy", "advance", f"{self.seen}{latency}{self.vs}{compared}: within the policy's limits"
        )
