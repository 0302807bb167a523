"""One look at a step, as the rollout analysis (:func:`handlers.analysis.judge`) takes it: the
readings laid out minute by minute (:class:`handlers.minutes.Table`), compared with the baseline
(:mod:`handlers.strata`), and the verdict with every number it used (:class:`Verdict`).

Pure: stdlib only, no I/O, no clock read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from handlers.minutes import Row, Table, latencies, step_minutes
from handlers.proportions import binomial_greater
from handlers.readings import Counts, Reading
from handlers.records import span
from handlers.strata import Comparison, against_history, compare, exact_greater, mann_whitney_greater

if TYPE_CHECKING:
    from handlers.rollout_rules import RolloutRule

# The rollout's error (1 - confidence) bounds every rollback of a candidate as good as its baseline, not the
# comparison's alone: the comparison spends this share of it, the rest is left to what its level does not
# bound (the absolute limits' tests, the bursts without a baseline at 100%, a variation estimated from few
# minutes). Spending all of it left nothing for those: 1.2-1.5% of healthy candidates rolled back at a goal of 1%.
COMPARISON_SHARE = 1 / 2
# The last step (100%) weighs the candidate's earlier steps' minutes too, against the baseline's hour before the
# rollout: it has power to spare (a 5x-worse candidate is caught there at any level) and gets this much of an
# earlier step's share; at a full share its final look rolled healthy candidates back as often as each earlier step's.
LAST_WEIGHT = 1 / 4
# A step's error is spent: half at the final look, an eightieth at each interim look (before the bake is
# over; a Haybittle-Peto boundary), so up to forty interim looks stay within the step's share.
FINAL_SHARE = 1 / 2
INTERIM_SHARE = 1 / 80
# At the end of a bake, a failure rate above max_error_rate rolls back when a one-sided binomial
# test puts it there at this level (2 failures of 20 at 5%: p=0.26, no; 6 of 20: p=0.0003, yes).
ABSOLUTE_LEVEL = 0.05
# Before it, a step whose every request failed (at least two) rolls back when a binomial test puts it
# above max_error_rate at this level (2 of 2 at 5%: p=0.0025) ...
ALL_FAILED_LEVEL = 0.05
# ... and the baseline, in the same minutes, does not explain them (the exact test at this level: a
# minute both deployments fail alike is the endpoint's, not the candidate's).
ALL_FAILED_BASELINE = 0.2
# A candidate failing every request through minutes the endpoint failed in too (a shared outage) rolls back
# when the baseline, in those same minutes, failed less beyond this level (the exact test over the minutes):
# all of the candidate's requests failing while the baseline still served most of its own is not the outage.
ALL_FAILED_OUTAGE = 0.01
# Before the bake is over the comparison decides only over this many minutes with failures in them
# (one bad minute of a rate that varies minute to minute is not enough).
INTERIM_MINUTES = 3
LATENCY_MINUTES = 3  # per-minute p95s each side before the rank test judges the latency ratio


# --------------------------------------------------------------------------- the error budget


def step_alpha(rule: RolloutRule, last: bool = False) -> float:
    """A step's share of the comparison's error (:data:`COMPARISON_SHARE` of the rollout's ``1 -
    confidence``), split over the stages compared with the baseline: each step below 100% (in the same
    minutes) and the shadow stage, if the rollout has one (``deploy.rollout.mirror``), a full share;
    the last step (``last``: at 100%, against the baseline's earlier minutes) :data:`LAST_WEIGHT` of
    one. The shares sum to the comparison's error whatever the steps. A step judged in the same minutes
    takes a full share (never more than the comparison's whole error), the last one too when the old
    deployment still served in its minutes (the traffic moved within its first minute): the sum then stays
    below ``1 - confidence`` (at most 0.8 of it); a step below 100% judged as the last one (its baseline
    served nothing in it) takes the smaller share."""
    spent = (1.0 - rule.health.confidence) * COMPARISON_SHARE
    weights = len(rule.steps) - 1 + (1 if rule.mirror is not None else 0) + LAST_WEIGHT
    return spent * LAST_WEIGHT / weights if last else min(spent, spent / weights)


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
        strata = self.table.own_strata
        alone = compare(strata, by_minute=False) if strata else None
        worse = alone.p_value if alone is not None else 0.0
        above = binomial_greater(failures, served, limit)
        if served >= 2 and failures == served and above < ALL_FAILED_LEVEL and worse < ALL_FAILED_BASELINE:
            return self.verdict(
                "unhealthy",
                "rollback",
                f"{self.seen} after {span(baked)}: every one of its {served} request(s) failed (p={above:.2g} < "
                f"{ALL_FAILED_LEVEL:g} at max_error_rate {limit:.1%}; p={worse:.2g} < {ALL_FAILED_BASELINE:g} against "
                "the baseline in the same minutes)",
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
        """Every request of the step failed, in minutes the baseline failed in too (left out of its
        own minutes), while the baseline failed fewer of its own in those same minutes beyond
        :data:`ALL_FAILED_OUTAGE`: 6 of 6 against 22 of 54 (p=0.0075) is the candidate's, not the outage's."""
        rows = [r for r in self.table.step if r.served and r.base_served]
        served, failures = sum(r.served for r in rows), sum(r.failures for r in rows)
        if served < 2 or failures < served or not any(r.excused == "shared" for r in rows):
            return None
        p = exact_greater([(r.failures, r.served, r.base_failures, r.base_served) for r in rows])
        if p >= ALL_FAILED_OUTAGE:
            return None
        base_served, base_failures = sum(r.base_served for r in rows), sum(r.base_failures for r in rows)
        return self.verdict(
            "unhealthy",
            "rollback",
            f"{self.c.text()} after {span(baked)}: every one of its {served} request(s) failed, in minutes the "
            f"endpoint failed in too ({_rows([r for r in rows if r.excused == 'shared'])}), while the baseline "
            f"failed {base_failures} of {base_served} in the same minutes (p={p:.2g} < {ALL_FAILED_OUTAGE:g}): "
            "the candidate's failures, not the outage's",
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
