"""A step's readings laid out minute by minute, for the rollout analysis (:mod:`handlers.analysis`):
which minutes are the step's, which the endpoint failed in (the baseline too), and what the
candidate did in the rest, its *own* minutes. Pure stdlib.

- A minute is **shared** when the baseline, in that same minute, failed above ``max_error_rate``
  beyond doubt (a one-sided binomial test at :data:`SHARED_LEVEL`), and the candidate did not fail
  more than the baseline in it (Fisher's exact test at :data:`WORSE_LEVEL`): a dependency outage, a bad
  minute of the endpoint. The candidate's failures in it are not held against the absolute limits
  (the comparison with the baseline still weighs them, minute by minute) for as long as the step
  has baked less than its longest bake (``max_bake``); after that they count.
- A minute **without a baseline** (the last step, at 100%, or an endpoint with no other
  deployment) cannot tell an endpoint's burst from the candidate's own failures: up to
  :data:`BURST_MINUTES` of them (or half the step's) that fail far more than the step's other minutes (above
  ``max_error_rate``, and above the others' rate at :data:`SHARED_LEVEL`) are left out of the
  absolute limits, so a burst of a minute or two does not roll a healthy candidate back, while a
  candidate failing on its own fails in the other minutes too (and has no such burst).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from handlers.proportions import binomial_greater, fisher_greater
from handlers.readings import Code, Minute, Reading
from handlers.strata import Stratum

if TYPE_CHECKING:
    from collections.abc import Iterable

SHARED_LEVEL = 0.01  # a baseline minute is failing when above max_error_rate at this level
WORSE_LEVEL = 1e-4  # ... and the candidate's share of it is its own when worse than the baseline's at this level
BURST_MINUTES = 3  # minutes without a baseline left out of the absolute limits at most (or half the step's)


@dataclass(frozen=True)
class Row:
    """One minute: the candidate's and the baseline's (served, failures), whether it is the step's,
    and ``shared`` / ``excused`` (left out of the absolute limits, and why)."""

    at: str
    served: int
    failures: int
    base_served: int
    base_failures: int
    in_step: bool
    shared: bool
    excused: str | None = None

    def as_list(self) -> list[object]:
        return [self.at, self.served, self.failures, self.base_served, self.base_failures, self.excused]


@dataclass(frozen=True)
class Table:
    """The minutes of a window (see the module); ``rows`` in time order."""

    rows: tuple[Row, ...]
    # the baseline's (failures, requests) in its minutes before the rollout (its reading's ``history``)
    # that it did not fail in (above the limit beyond doubt, as a shared minute), oldest first
    before: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(
        cls,
        candidate: Reading,
        baseline: Reading | None,
        classes: tuple[str, ...],
        limit: float,
        step_since: str | None,
        excuse_shared: bool,
    ) -> Table:
        cand = {m.at: m.counted(classes) for m in candidate.by_minute()}
        base = {m.at: m.counted(classes) for m in baseline.by_minute()} if baseline is not None else {}
        single = not candidate.minutes  # a reading without minutes is one minute: all of it is the step's
        rows = []
        for at in sorted(set(cand) | set(base)):
            served, failures = cand.get(at, (0, 0))
            b_served, b_failures = base.get(at, (0, 0))
            shared = _failing(b_failures, b_served, limit) and (
                not served or fisher_greater(failures, served, b_failures, b_served) >= WORSE_LEVEL
            )
            in_step = single or step_since is None or at >= step_since
            rows.append(Row(at, served, failures, b_served, b_failures, in_step, shared))
        alone = [r for r in rows if not single and r.in_step and r.base_served == 0 and r.served]
        burst = {r.at for r in _bursts(alone, [r for r in rows if r.served and not r.shared], limit)}
        excused = []
        for r in rows:
            why = None
            if r.in_step and r.shared and excuse_shared:
                why = "shared"
            elif r.at in burst:
                why = "no_baseline"
            excused.append(Row(r.at, r.served, r.failures, r.base_served, r.base_failures, r.in_step, r.shared, why))
        first = rows[0].at if rows else None
        history = [m.counted(classes) for m in baseline.history if first is None or m.at < first] if baseline else []
        before = tuple((f, n) for n, f in history if n and not _failing(f, n, limit))
        return cls(tuple(excused), before)

    @property
    def step(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.in_step)

    @property
    def own(self) -> tuple[int, int]:
        """(served, failures) of the step's minutes that are not excused."""
        rows = [r for r in self.step if r.excused is None]
        return sum(r.served for r in rows), sum(r.failures for r in rows)

    @property
    def own_strata(self) -> list[Stratum]:
        """The step's own minutes where the baseline served too, as strata."""
        return [
            (r.failures, r.served, r.base_failures, r.base_served)
            for r in self.step
            if r.excused is None and r.served and r.base_served
        ]

    @property
    def strata(self) -> list[Stratum]:
        """Every minute of the window both served in (the earlier steps' too), as strata, but the
        shared ones: a minute the endpoint failed in, both deployments alike, holds much variance and
        no evidence, and would only dilute the rest."""
        return [
            (r.failures, r.served, r.base_failures, r.base_served)
            for r in self.rows
            if r.served and r.base_served and not r.shared
        ]

    @property
    def candidate_minutes(self) -> list[tuple[int, int]]:
        """The candidate's (failures, requests) over the rollout, for the last step's comparison with the
        baseline's earlier minutes: the step's own minutes (bursts without a baseline left out) and the
        earlier steps' (but those the endpoint failed in): its evidence adds up from step to step, as
        the comparison in the same minutes' does (:attr:`strata`). A low-volume endpoint's 100% step
        alone sees too few requests to tell a 5x-worse candidate whose rate varies from minute to minute."""
        return [
            (r.failures, r.served) for r in self.rows if r.served and (r.excused is None if r.in_step else not r.shared)
        ]

    @property
    def calm(self) -> list[tuple[int, int]]:
        """The baseline's (failures, requests) in the minutes of the window it did not fail in."""
        return [(r.base_failures, r.base_served) for r in self.rows if r.base_served and not r.shared]

    @property
    def reference(self) -> list[tuple[int, int]]:
        """The baseline's calm minutes before the rollout (``before``) and in the window: what its
        calm failure rate, and how much that rate varies from minute to minute, are estimated from."""
        return [*self.before, *self.calm]

    def excused_of(self, why: str) -> list[Row]:
        return [r for r in self.step if r.excused == why]

    @property
    def failing_now(self) -> Row | None:
        """The latest minute of the window with traffic, when the baseline failed in it."""
        latest = next((r for r in reversed(self.rows) if r.served or r.base_served), None)
        return latest if latest is not None and latest.shared else None


def _failing(failures: int, served: int, limit: float) -> bool:
    """A baseline minute failing above ``limit`` beyond doubt (a one-sided binomial test at :data:`SHARED_LEVEL`)."""
    return served > 0 and failures > limit * served and binomial_greater(failures, served, limit) < SHARED_LEVEL


def _bursts(rows: list[Row], reference: list[Row], limit: float) -> list[Row]:
    """Of minutes without a baseline (``rows``), the bursts: above ``limit`` and above the
    candidate's rate in its other minutes of the window (``reference``: the earlier steps' too),
    each beyond doubt (binomial tests at :data:`SHARED_LEVEL`, the first as a shared minute's
    baseline), at most :data:`BURST_MINUTES` or half of the step's minutes. A candidate that fails in
    every minute has no burst: its minutes are alike. Nor does one whose rate merely varies from minute
    to minute: a candidate failing 5% with a varying rate has minutes of 8 failures in 66 (12%), above
    its other minutes' rate beyond chance but not above a 5% limit beyond doubt (p=0.02); taken for
    bursts, its worst minutes were left out of the comparison with the baseline too, which then let
    it through."""
    served, failures = sum(r.served for r in reference), sum(r.failures for r in reference)
    found = []
    for r in rows:
        mine = r in reference
        rest_served, rest_failures = served - r.served * mine, failures - r.failures * mine
        if not rest_served or not _failing(r.failures, r.served, limit):
            continue
        rate = max(rest_failures / rest_served, 1 / (2 * rest_served))
        p = binomial_greater(r.failures, r.served, min(rate, 1.0))
        if p < SHARED_LEVEL:
            found.append((p, r.at, r))
    return [r for _, _, r in sorted(found)[: max(BURST_MINUTES, len(rows) // 2)]]


def step_minutes(reading: Reading, step_since: str | None) -> Reading:
    """``reading`` cut to the step's minutes (from ``step_since`` on): their histogram summed and
    their p95 the request-weighted mean of theirs. Unchanged without minutes or ``step_since``,
    or when every minute is the step's."""
    if step_since is None or not reading.minutes or reading.minutes[0].at >= step_since:
        return reading
    kept = [m for m in reading.minutes if m.at >= step_since]
    codes: dict[tuple[int, int | None], int] = {}
    for m in kept:
        for c, model, n in m.codes:
            codes[(c, model)] = codes.get((c, model), 0) + n
    weights = [(sum(n for _, _, n in m.codes), m.p95_ms) for m in kept if m.p95_ms is not None]
    total = sum(w for w, _ in weights)
    p95 = (
        sum(w * p for w, p in weights if p is not None) / total
        if total
        else (sum(p for _, p in weights if p is not None) / len(weights) if weights else None)
    )
    return Reading.of(
        reading.endpoint,
        reading.deployment,
        step_since,
        reading.until,
        codes,
        p95,
        reading.source,
        reading.request,
        reading.note,
        minutes=[(m.at, m.codes, m.p95_ms) for m in kept],
    )


def latencies(minutes: Iterable[Minute]) -> list[float]:
    """The per-minute p95s of the minutes that served requests."""
    return [m.p95_ms for m in minutes if m.p95_ms is not None and _served(m.codes)]


def _served(codes: tuple[Code, ...]) -> int:
    return sum(n for _, _, n in codes)
