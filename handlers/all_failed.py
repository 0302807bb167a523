"""Every request failing: the rules that roll a step back before its bake is over because the
candidate failed every request it served, however few (a broken scoring script, a missing
dependency), as the rollout analysis (:func:`handlers.analysis.judge`) takes them first.

- **On its own** (:func:`alone`): every one of at least two requests of the step's own minutes (those
  the endpoint did not fail in) failed, above ``max_error_rate`` by a binomial test at
  :data:`ALL_FAILED_LEVEL`, and the baseline in the same minutes does not explain them (the exact test
  at :data:`ALL_FAILED_BASELINE`).
- **In an outage** (:func:`in_outage`): every request of the step failed in minutes the endpoint failed in
  too (the baseline as well: left out of the absolute limits, :mod:`handlers.minutes`), and the baseline
  failed fewer of its own in those same minutes than the candidate, by the exact test over the minutes:

  - at :data:`ALL_FAILED_BASELINE`, the level of the minutes it did not fail in, while the candidate has
    **not answered one request** since its traffic began (over the rollout's minutes, its earlier steps'
    included): a candidate that has never served a request without failing while the baseline served
    most of its own is not sharing the outage, it is broken (at 60 requests a minute its first two
    minutes in an outage, 2 of 2 and 5 of 5 against 32 of 54 and 29 of 58, are p = 0.014);
  - at :data:`ALL_FAILED_OUTAGE` once it has (every request of a later step failing: a candidate that
    answered before is broken far less often, and at 5 requests a minute a healthy one fails all 5 in a
    60% outage one time in thirteen).

  A healthy candidate fails all its requests in an outage as often as the test's p-value says: the level
  bounds how often one is rolled back in each outage it starts in (what it costs over the rollouts, and
  what catching every broken candidate within two minutes needs, is in docs/benchmarks.md).

Pure: stdlib only, no I/O, no clock read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from handlers.proportions import binomial_greater
from handlers.strata import compare, exact_greater

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from handlers.minutes import Row
    from handlers.strata import Stratum

# A step whose every request failed (at least two) rolls back when a binomial test puts it above
# max_error_rate at this level (2 of 2 at 5%: p=0.0025) ...
ALL_FAILED_LEVEL = 0.05
# ... and the baseline, in the same minutes, does not explain them (the exact test at this level: a
# minute both deployments fail alike is the endpoint's, not the candidate's). The level too of a
# candidate failing every request in an outage that has not answered one request since its traffic began.
ALL_FAILED_BASELINE = 0.2
# A candidate that answered requests before and fails every request of a step through minutes the
# endpoint failed in too (a shared outage) rolls back when the baseline, in those same minutes, failed less
# beyond this level (the exact test over the minutes): 6 of 6 against 22 of 54 (p=0.0075).
ALL_FAILED_OUTAGE = 0.01


@dataclass(frozen=True)
class Alone:
    """Every one of ``served`` requests of the step's own minutes failed: ``above`` the binomial
    test's p-value against ``max_error_rate``, ``worse`` the exact test's against the baseline."""

    served: int
    above: float
    worse: float


@dataclass(frozen=True)
class InOutage:
    """Every one of ``served`` requests failed in minutes the baseline served in, at least one of them
    a minute the endpoint failed in (``shared``), where the baseline failed ``base_failures`` of
    ``base_served``: the exact test's ``p_value`` and the ``level`` it is held to
    (:data:`ALL_FAILED_BASELINE` when the candidate had not ``answered`` one request since its traffic
    began, :data:`ALL_FAILED_OUTAGE` when it had); below it, the step rolls back."""

    served: int
    base_served: int
    base_failures: int
    p_value: float
    level: float
    answered: bool
    shared: tuple[Row, ...]

    @property
    def rolls_back(self) -> bool:
        return self.p_value < self.level


def alone(served: int, failures: int, strata: Sequence[Stratum], limit: float) -> Alone | None:
    """The step's own minutes, ``served`` requests of which ``failures`` failed (``strata`` those the
    baseline served in too), when every one of at least two failed beyond ``limit`` and the baseline."""
    if served < 2 or failures < served:
        return None
    above = binomial_greater(failures, served, limit)
    against = compare(strata, by_minute=False) if strata else None
    worse = against.p_value if against is not None else 0.0
    return Alone(served, above, worse) if above < ALL_FAILED_LEVEL and worse < ALL_FAILED_BASELINE else None


def answered(rows: Iterable[Row]) -> bool:
    """Whether the candidate served at least one request without a failure in ``rows``."""
    return any(r.failures < r.served for r in rows)


def in_outage(step: Sequence[Row], answered: bool) -> InOutage | None:
    """The step's minutes (``step``) when every one of at least two of the candidate's requests in
    those the baseline served in too failed, at least one of them a shared minute (the endpoint's:
    ``Row.excused`` "shared"): the exact test of the baseline failing fewer of its own there, held to
    :data:`ALL_FAILED_BASELINE` while the candidate has not ``answered`` a request since its traffic
    began, else to :data:`ALL_FAILED_OUTAGE`; None otherwise."""
    rows = [r for r in step if r.served and r.base_served]
    served, failures = sum(r.served for r in rows), sum(r.failures for r in rows)
    shared = tuple(r for r in rows if r.excused == "shared")
    if served < 2 or failures < served or not shared:
        return None
    p = exact_greater([(r.failures, r.served, r.base_failures, r.base_served) for r in rows])
    base_served, base_failures = sum(r.base_served for r in rows), sum(r.base_failures for r in rows)
    level = ALL_FAILED_OUTAGE if answered else ALL_FAILED_BASELINE
    return InOutage(served, base_served, base_failures, p, level, answered, shared)
