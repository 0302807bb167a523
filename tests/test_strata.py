"""The statistics of the minute-by-minute comparison (handlers/strata.py) against known values."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from handlers import proportions, strata


def hypergeometric(k: int, m: int, n1: int, n0: int) -> float:
    total = n1 + n0
    if not (0 <= k <= n1 and 0 <= m - k <= n0):
        return 0.0
    return math.comb(m, k) * math.comb(total - m, n1 - k) / math.comb(total, n1)


def test_one_minute_is_fisher_s_exact_test() -> None:
    for minute in [(3, 60, 5, 540), (0, 60, 5, 540), (6, 600, 54, 5400), (1, 5, 0, 100), (2, 2, 0, 18)]:
        assert strata.exact_greater([minute]) == pytest.approx(proportions.fisher_greater(*minute), rel=1e-9)
    assert strata.exact_greater([(2, 2, 0, 18)]) == pytest.approx(1 / 190)  # both of 2 out of 20 requests: C(20,2)


def test_several_minutes_convolve_their_hypergeometric_distributions() -> None:
    minutes = [(2, 10, 1, 30), (3, 5, 4, 20), (0, 8, 2, 8)]
    observed = sum(m[0] for m in minutes)
    brute = 0.0
    for ks in itertools.product(*(range(m[1] + 1) for m in minutes)):
        if sum(ks) >= observed:
            brute += math.prod(
                hypergeometric(k, f1 + f0, n1, n0) for k, (f1, n1, f0, n0) in zip(ks, minutes, strict=True)
            )
    assert strata.exact_greater(minutes) == pytest.approx(brute, rel=1e-9)


def test_mann_whitney_against_a_hand_computed_case() -> None:
    # x = 3, 5, 7 beats y = 1, 2, 4 in 8 of its 9 pairs; of the C(6, 3) = 20 orders, U >= 8 in 2 (U = 8, 9)
    assert strata.mann_whitney_greater([3, 5, 7], [1, 2, 4]) == (8.0, pytest.approx(2 / 20))
    assert strata.mann_whitney_greater([1, 2, 3], [4, 5, 6]) == (0.0, pytest.approx(1.0))
    # a tie (5 and 5): the normal approximation, U = 9.5, mean 6, variance 12/12 * (8 - 6/42), continuity 0.5
    u, p = strata.mann_whitney_greater([3, 5, 7], [1, 2, 4, 5])
    assert u == 9.5 and p == pytest.approx(strata.normal_greater(3.0 / math.sqrt(8 - 6 / 42)))
    assert strata.mann_whitney_greater([], [1.0]) == (0.0, 1.0)


def test_a_spike_both_deployments_share_is_no_evidence_against_the_candidate() -> None:
    calm = [(1, 60, 5, 540)] * 9
    spike = (30, 60, 270, 540)  # half of everything failed in one minute, the candidate its share
    together = strata.compare([*calm, spike])
    assert together is not None and together.p_value > 0.3
    assert together.observed == 39 and together.expected == pytest.approx(9 * 0.6 + 30)  # its share of each minute
    # failing all of the minute while the baseline fails half (the variation learnt from the calm minutes, as
    # the judge passes them)
    worse = strata.compare([*calm, (60, 60, 270, 540)], baseline=[(5, 540)] * 9)
    assert worse is not None and worse.p_value < 1e-6


def test_a_handful_of_failures_at_a_few_requests_a_minute_is_weighed_exactly() -> None:
    quiet = [(0, 1, 0, 9)] * 18 + [(1, 1, 0, 9), (1, 1, 0, 9)]  # 2 failures of 20 requests, the baseline none of 180
    got = strata.compare(quiet)
    assert got is not None and got.test == "minutes-exact" and got.minutes == 2
    assert got.p_value == pytest.approx(0.1**2)  # each failed minute: the candidate held 1 of its 10 requests


def test_the_variation_is_learnt_from_the_baseline_s_minutes() -> None:
    rng = random.Random(3)
    steady = [(round(rng.gauss(540, math.sqrt(534.6))), 54000) for _ in range(20)]
    varying = [(round(540 * rng.gammavariate(4.0, 0.25)), 54000) for _ in range(20)]  # c2 = 0.25

    def mean(weights: list[tuple[float, float]]) -> float:
        assert sum(w for _, w in weights) == pytest.approx(1.0)
        return sum(c * w for c, w in weights)

    assert mean(strata.variation(steady)) < 0.01
    assert 0.1 < mean(strata.variation(varying)) < 0.6
    prior = mean(strata.variation([]))  # no minutes: the prior
    assert prior == pytest.approx(sum(c * w for c, w in zip(strata.GRID, strata.PRIOR, strict=True)))
    quiet = mean(strata.variation([(0, 10)] * 19 + [(1, 10)]))  # a quiet endpoint's minutes say little
    assert quiet == pytest.approx(prior, rel=0.3)


def test_a_varying_rate_widens_the_comparison() -> None:
    rng = random.Random(5)
    base = [(round(54 * rng.gammavariate(4.0, 0.25)), 5400) for _ in range(10)]
    minutes = [(9, 600, f0, n0) for f0, n0 in base]  # the candidate 1.5%, the baseline about 1%
    steady = strata.compare(minutes, baseline=[(54, 5400)] * 10)
    varying = strata.compare(minutes, baseline=base)
    assert steady is not None and varying is not None
    assert varying.variation > steady.variation and varying.inflated > varying.variance
    assert varying.p_value > steady.p_value


def test_the_last_step_is_compared_with_the_baseline_s_earlier_minutes() -> None:
    earlier = [(1, 60), (0, 60), (1, 60)] * 5  # the baseline at about 1% in 15 minutes
    bad = strata.against_history([(3, 60)] * 10, earlier)  # 5%
    assert bad is not None and bad.test.startswith("history-") and bad.p_value < 1e-3
    same = strata.against_history([(1, 60), (0, 60)] * 5, earlier)
    assert same is not None and same.p_value > 0.3
    assert strata.against_history([(0, 600)], [(0, 900)]) is None  # nobody failed: nothing to tell


def test_the_candidate_s_own_minutes_tell_the_variation_too() -> None:
    rng = random.Random(11)
    steady = [(round(rng.gauss(54, math.sqrt(53.5))), 5400) for _ in range(10)]
    varying = [(round(54 * rng.gammavariate(4.0, 0.25)), 5400) for _ in range(10)]  # c2 = 0.25, as the baseline's would

    def mean(weights: list[tuple[float, float]]) -> float:
        return sum(c * w for c, w in weights)

    alone = mean(strata.variation(steady))
    assert mean(strata.variation(steady, varying)) > alone  # the candidate's minutes vary: more than the baseline says
    assert mean(strata.variation(steady, [(600, 600)] * 10)) == pytest.approx(alone)  # all failing tells nothing


def test_the_variation_is_weighed_at_the_calm_rate_even_in_a_minute_below_it() -> None:
    calm = [(54, 5400)] * 10
    quiet = strata.compare([(6, 600, 20, 5400)], baseline=calm)  # the minute's own rate (0.4%) is below the calm 1%
    usual = strata.compare([(6, 600, 54, 5400)], baseline=calm)
    assert quiet is not None and usual is not None
    # the variance of the dispersed test is the same: a minute that is quiet by chance does not shrink it (neither
    # its binomial part, at the calm rate, nor what the variation adds); the exact test's, conditional on the
    # minute's failures, does
    assert quiet.inflated == pytest.approx(usual.inflated) and quiet.variance < usual.variance
    assert quiet.calm == pytest.approx(0.01) and quiet.reference == 10


def _gamma_tail(shape: int, y: float) -> float:
    """P(G >= y) for G ~ Gamma(shape, 1), shape a whole number: P(Poisson(y) <= shape - 1)."""
    term, total = math.exp(-y), 0.0
    for k in range(shape):
        total += term
        term *= y / (k + 1)
    return total


def test_the_skewed_tail_is_a_gamma_s_and_the_normal_without_skew() -> None:
    assert strata.skewed_greater(3.0, 0.0) == strata.normal_greater(3.0)
    assert strata.skewed_greater(3.0, -0.2) == strata.normal_greater(3.0)  # never less careful than the normal
    # the mean of 10 minutes' gamma factors (shape 4 each: a coefficient of variation 0.5) is Gamma(40) / 40, of
    # skewness 2 / sqrt(40): its tail 3.45 standard deviations up is about 4 times the normal's
    k, z = 40, 3.45
    exact = _gamma_tail(k, k + z * math.sqrt(k))
    assert strata.skewed_greater(z, 2 / math.sqrt(k)) == pytest.approx(exact, rel=0.1)
    assert exact > 3 * strata.normal_greater(z)
