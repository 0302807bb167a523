"""The comparison of a candidate with its baseline *minute by minute*, for the rollout analysis
(:mod:`handlers.analysis`), and the rank test of per-minute latencies. Pure stdlib.

Each minute in which both deployments served is a *stratum*: ``(f1, n1, f0, n0)``, the candidate's
failures of its requests and the baseline's. Within a minute both deployments face the same
endpoint (the same dependencies, the same bad minute), so the question is asked inside each minute:
given the minute's failures ``f1 + f0``, does the candidate hold more of them than its share of
the requests? Summed over the minutes (Cochran-Mantel-Haenszel): ``O`` the candidate's failures,
``E`` their expectation and ``V`` their variance under "as good as the baseline", each minute's
from the hypergeometric distribution. A minute where nobody failed, or everybody, says nothing;
a failure spike both deployments share adds to ``E`` as much as to ``O``.

:func:`compare` gives the one-sided p-value that the candidate fails more, the larger (the more
careful) of two:

- *counted*: while ``V`` is small, the exact distribution of ``O`` (the minutes' hypergeometric
  distributions convolved; with one minute it is Fisher's exact test), so a handful of failures is
  judged by what a handful can mean; past :data:`EXACT_UP_TO`, the normal approximation;
- *varying*: failure rates that vary from minute to minute beyond chance (instance restarts, noisy
  neighbours) make the counts vary more than the binomial model allows: a minute with ``mu``
  expected failures varies by about ``mu (1 + c2 mu)``, for a rate whose squared coefficient of
  variation is ``c2``. :func:`variation` weighs the values of ``c2`` in :data:`GRID` by how well
  they explain the baseline's own minutes (the busier deployment, untouched by the candidate's
  failures; with its minutes before the rollout, which the caller passes as the reference), from a
  prior that finds a steady rate as likely as a varying one; the p-value is the tail of ``O - E``
  over the variance each ``c2`` gives, averaged with those weights. That variance is taken at the
  baseline's calm rate (never below it: a minute the baseline happened to fail less in does not
  narrow it), and the tail is a skewed one (:func:`skewed_greater`: a varying rate's counts have a
  heavier upper tail than the normal's, which matters at thousands of requests a minute). A busy
  endpoint's minutes soon tell which; a quiet one's leave the prior, where the counts matter more.

:func:`against_history` is the same question for a step without a baseline in its minutes (at 100%):
the candidate's rate against the baseline's in the rollout's earlier minutes.

:func:`mann_whitney_greater` is the one-sided Mann-Whitney U test (Kayenta's test of a canary's
metric against its baseline): exact for small samples without ties, the normal approximation with
the tie correction otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Stratum = tuple[int, int, int, int]  # (candidate failures, candidate requests, baseline failures, baseline requests)

EXACT_UP_TO = 40.0  # the exact distribution while V is at most this; the normal approximation above
# The squared coefficients of variation of a failure rate from minute to minute that are weighed,
# and their prior weights: a steady rate (the binomial) as likely as one that varies.
GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
PRIOR = (0.25, *([0.75 / (len(GRID) - 1)] * (len(GRID) - 1)))
# The likelihood is tempered (raised to this power): minutes whose rate varies are less alike than the
# scaled chi-square has them (a heavy-tailed factor, requests that differ minute to minute), so the
# minutes are held to say less than they seem to, and the prior keeps more weight.
TEMPER = 0.5
TINY = 1e-16  # probabilities below this share of a distribution's largest are left out


def normal_greater(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _hypergeometric(m: int, n1: int, n0: int) -> tuple[int, list[float]]:
    """The distribution of the candidate's failures in one minute given the minute's ``m``: (the
    smallest value, the probabilities from it on), tails below :data:`TINY` left out."""
    total = n1 + n0
    low, high = max(0, m - n0), min(m, n1)
    mode = min(high, max(low, (n1 + 1) * (m + 1) // (total + 2)))

    def log_pmf(k: int) -> float:
        return (
            math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1)
            + math.lgamma(total - m + 1) - math.lgamma(n1 - k + 1) - math.lgamma(total - m - n1 + k + 1)
            - math.lgamma(total + 1) + math.lgamma(n1 + 1) + math.lgamma(total - n1 + 1)
        )  # fmt: skip

    peak = math.exp(log_pmf(mode))
    up, term, k = [], peak, mode
    while k < high:
        term *= (m - k) * (n1 - k) / ((k + 1) * (total - m - n1 + k + 1))
        k += 1
        if term < peak * TINY:
            break
        up.append(term)
    down, term, k = [], peak, mode
    while k > low:
        term *= k * (total - m - n1 + k) / ((m - k + 1) * (n1 - k + 1))
        k -= 1
        if term < peak * TINY:
            break
        down.append(term)
    return mode - len(down), [*reversed(down), peak, *up]


def exact_greater(strata: Sequence[Stratum]) -> float:
    """P(O >= observed) where O sums the minutes' hypergeometric counts: the exact conditional
    test of "as good as the baseline" over the minutes (Fisher's exact test when there is one)."""
    observed = sum(s[0] for s in strata)
    start, dist = 0, [1.0]
    for f1, n1, f0, n0 in strata:
        low, pmf = _hypergeometric(f1 + f0, n1, n0)
        out = [0.0] * (len(dist) + len(pmf) - 1)
        for i, p in enumerate(dist):
            if p:
                for j, q in enumerate(pmf):
                    out[i + j] += p * q
        biggest = max(out)
        first = next(i for i, p in enumerate(out) if p >= biggest * TINY)
        last = max(i for i, p in enumerate(out) if p >= biggest * TINY)
        start, dist = start + low + first, out[first : last + 1]
    total = sum(dist)
    at = observed - start
    if at <= 0:
        return 1.0
    if at >= len(dist):
        return 0.0
    return min(1.0, sum(dist[at:]) / total)


@dataclass(frozen=True)
class Comparison:
    """The minute-by-minute comparison: ``p_value`` (one-sided: the candidate fails more), the
    ``test`` that gave it, the candidate's ``observed`` failures in the informative minutes, their
    ``expected`` number and binomial ``variance`` as good as the baseline, the ``variation`` (the
    squared coefficient of variation of a failure rate from minute to minute, its expected value
    after :func:`variation`) and the ``inflated`` variance it gives, the ``minutes`` that carried
    information, and the baseline's ``calm`` failure rate and the ``reference`` minutes (its own,
    those before the rollout included) that rate and the variation were estimated from."""

    p_value: float
    test: str
    observed: int
    expected: float
    variance: float
    variation: float
    inflated: float
    minutes: int
    calm: float | None = None
    reference: int = 0


def variation(
    baseline: Sequence[tuple[int, int]], candidate: Sequence[tuple[int, int]] = ()
) -> list[tuple[float, float]]:
    """How much a failure rate varies from minute to minute beyond chance, as weights over
    :data:`GRID` (``(c2, weight)``, summing to 1), from the baseline's minutes ``(failures,
    requests)`` (the busier deployment, unaffected by the candidate's own failures; the caller leaves
    out the minutes the endpoint failed in). A rate that varies by a factor of mean 1 and squared
    coefficient of variation ``c2`` gives a minute with ``mu`` expected failures a variance of about
    ``mu (1 + c2 mu)``; Pearson's statistic over ``k`` minutes is then about ``1 + c2 mu`` times a
    chi-square with ``k - 1`` degrees of freedom. The prior (:data:`PRIOR`: the binomial or a rate
    that varies, alike) is weighed by that likelihood (tempered, :data:`TEMPER`): a quiet endpoint's few failures say little and
    leave the prior; a busy endpoint's minutes soon tell a steady rate from a varying one.

    ``candidate``: the candidate's minutes of one step (one share of the traffic), weighed the same
    way around its *own* rate: how much a rate varies is told by both deployments, whether or not the
    candidate fails more (a candidate failing every request tells nothing and is left out)."""
    logs = [math.log(w) for w in PRIOR]
    for group in (baseline, candidate):
        minutes = [(f, n) for f, n in group if n > 0]
        k = len(minutes)
        failures, requests = sum(f for f, _ in minutes), sum(n for _, n in minutes)
        if k < 2 or not 0 < failures < requests:
            continue
        p = failures / requests
        pearson = sum((f - n * p) ** 2 / (n * p * (1 - p)) for f, n in minutes)
        mu, half = failures / (1 - p) / k, (k - 1) / 2
        for i, c2 in enumerate(GRID):
            scale = 1 + c2 * mu
            x = pearson / scale
            logs[i] += TEMPER * ((half - 1) * math.log(max(x, 1e-300)) - x / 2 - math.log(scale))
    top = max(logs)
    weights = [math.exp(v - top) for v in logs]
    total = sum(weights)
    return [(c2, w / total) for c2, w in zip(GRID, weights, strict=True)]


def skewed_greater(z: float, skew: float) -> float:
    """P(X >= z) for a standardized statistic X whose skewness is ``skew``: a shifted gamma with the same
    mean, variance and skewness (Pearson type III), its tail by the Wilson-Hilferty cube root; the normal
    tail when ``skew`` is 0 (or below: never less careful than the normal)."""
    if skew <= 1e-9:
        return normal_greater(z)
    k = 4.0 / (skew * skew)  # the gamma's shape
    y = k + z * math.sqrt(k)
    if y <= 0.0:
        return 1.0
    return normal_greater(((y / k) ** (1.0 / 3.0) - 1.0 + 1.0 / (9.0 * k)) * 3.0 * math.sqrt(k))


@dataclass(frozen=True)
class Moments:
    """The statistic ``d`` of the dispersed test (continuity-corrected) and how its variance and third
    cumulant grow with the variation ``c2``: variance ``binomial + c2 * spread``, third cumulant ``3 c2
    k3[0] + 2 c2**2 k3[1]``. Each deployment's count in a minute is taken as negative binomial: a Poisson
    count whose rate varies by a gamma factor of mean 1 and squared coefficient of variation ``c2``, of
    third cumulant ``mu + 3 c2 mu**2 + 2 c2**2 mu**3``; the ``mu`` term, the skew of a few counts, is the
    exact test's to weigh (:func:`compare` takes the larger p-value), the rest is the skew a varying rate
    adds: at thousands of requests a minute the count is the rate factor's, and its upper tail is heavier
    than the normal's."""

    d: float
    binomial: float
    spread: float
    k3: tuple[float, float]

    def tail(self, c2: float) -> float:
        variance = self.binomial + c2 * self.spread
        if variance <= 0.0:
            return 1.0
        third = 3.0 * c2 * self.k3[0] + 2.0 * c2 * c2 * self.k3[1]
        return skewed_greater(self.d / math.sqrt(variance), third / variance**1.5)


def _mixed(moments: Moments, weights: list[tuple[float, float]]) -> float:
    """The upper tail of the statistic, averaged over the weights of the variation."""
    return sum(w * moments.tail(c2) for c2, w in weights if w > 1e-12)


def _cubes(a: float, mu1: float, b: float, mu0: float) -> tuple[float, float]:
    """The terms of the third cumulant the variation adds to ``a f1 - b f0`` (``f1``, ``f0`` independent
    counts of means ``mu1``, ``mu0``): ``3 c2`` times the first, ``2 c2**2`` times the second."""
    return (a**3 * mu1**2 - b**3 * mu0**2, a**3 * mu1**3 - b**3 * mu0**3)


def compare(
    strata: Sequence[Stratum],
    *,
    by_minute: bool = True,
    baseline: Sequence[tuple[int, int]] = (),
    own: Sequence[tuple[int, int]] = (),
) -> Comparison | None:
    """The candidate against the baseline over the minutes both served in (see the module); None
    when no minute carries information (nobody failed, or everybody, or one side served nothing).
    ``baseline``: the baseline's minutes ``(failures, requests)`` the minute-to-minute variation and
    the calm failure rate are estimated from (default: those of the strata); ``own``: the candidate's minutes of
    the step, which tell the variation too (:func:`variation`). ``by_minute`` False: the strata are not minutes
    (a window read whole): no variation is assumed."""
    informative = [s for s in strata if s[1] > 0 and s[3] > 0 and 0 < s[0] + s[2] < s[1] + s[3]]
    if not informative:
        return None
    reference = list(baseline) or [(s[2], s[3]) for s in strata]
    calm = sum(f for f, _ in reference) / max(1, sum(n for _, n in reference))
    d = variance = binomial = spread = 0.0
    k3 = (0.0, 0.0)
    for f1, n1, f0, n0 in informative:
        total, m = n1 + n0, f1 + f0
        d += f1 - m * n1 / total
        variance += m * (total - m) * n1 * n0 / (total * total * (total - 1))
        # each side's own expected failures at the baseline's calm rate: what varies deployment by deployment is
        # its own rate (a minute both fail in alike is left out by the caller). Not the minute's own rate below
        # it: in a minute the baseline failed less than usual that would shrink the variance exactly when the
        # candidate looks worse (its share of the minute's failures is then larger)
        rate = max(calm, m / total)
        binomial += n1 * n0 * rate * (1 - rate) / total
        mu1, mu0 = calm * n1, calm * n0
        a, b = n0 / total, n1 / total
        spread += a * a * mu1 * mu1 + b * b * mu0 * mu0
        k3 = tuple(x + y for x, y in zip(k3, _cubes(a, mu1, b, mu0), strict=True))  # type: ignore[assignment]
    observed = sum(s[0] for s in informative)
    if variance <= 0.0:
        return None
    weights = variation(reference, own) if by_minute else [(0.0, 1.0)]
    c2 = sum(c * w for c, w in weights)
    inflated = binomial + c2 * spread
    if variance <= EXACT_UP_TO:
        counted, test = exact_greater(informative), "exact"
    else:
        counted, test = normal_greater((d - 0.5) / math.sqrt(variance)), "z"
    dispersed = _mixed(Moments(d - 0.5, binomial, spread, k3), weights)
    if c2 > 0 and dispersed > counted:
        counted, test = dispersed, "dispersed"
    name = {"exact": "fisher-exact", "z": "z"}.get(test, test) if len(informative) == 1 else f"minutes-{test}"
    return Comparison(
        counted, name, observed, observed - d, variance, c2, inflated, len(informative), calm, len(reference)
    )


def against_history(candidate: Sequence[tuple[int, int]], baseline: Sequence[tuple[int, int]]) -> Comparison | None:
    """The candidate's minutes ``(failures, requests)`` against the baseline's *earlier* minutes,
    for a step without a baseline in its own minutes (at 100% the old deployment serves nothing):
    the two rates compared as one table (Fisher's exact test, or the normal approximation), and,
    as :func:`compare` does, the larger p-value of that and of the statistic whose variance the
    minute-to-minute variation (:func:`variation`, from both deployments' minutes) inflates."""
    f1, n1 = sum(f for f, _ in candidate), sum(n for _, n in candidate)
    f0, n0 = sum(f for f, _ in baseline), sum(n for _, n in baseline)
    if n1 == 0 or n0 == 0 or f1 + f0 in (0, n1 + n0):
        return None
    whole = compare([(f1, n1, f0, n0)], by_minute=False)
    if whole is None:
        return None
    p = (f1 + f0) / (n1 + n0)
    weights = variation(baseline, candidate)
    c2 = sum(c * w for c, w in weights)
    binomial = p * (1 - p) * (1 / n1 + 1 / n0)
    spread = p * p * (sum(n * n for _, n in candidate) / n1**2 + sum(n * n for _, n in baseline) / n0**2)
    diff = f1 / n1 - f0 / n0
    k3 = (0.0, 0.0)
    for minutes, total, sign in ((candidate, n1, 1.0), (baseline, n0, -1.0)):
        for _, n in minutes:  # a minute's count is n p on average, weighed by 1 / total in its side's rate
            k3 = tuple(x + sign * (p * n) ** i / total**3 for i, x in enumerate(k3, 2))  # type: ignore[assignment]
    dispersed = _mixed(Moments(diff - 0.5 * (1 / n1 + 1 / n0), binomial, spread, k3), weights)
    p_value, test = (dispersed, "dispersed") if dispersed > whole.p_value else (whole.p_value, whole.test)
    inflated = whole.variance * (binomial + c2 * spread) / binomial
    return Comparison(
        p_value,
        f"history-{test}",
        f1,
        n1 * f0 / n0,
        whole.variance,
        c2,
        inflated,
        len(candidate),
        f0 / n0,
        len(baseline),
    )


def mann_whitney_greater(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """One-sided Mann-Whitney U test that ``x`` tends to be larger than ``y``: (U, p). U counts the
    pairs where the x is larger (a tie counts a half). Exact without ties while both samples hold
    at most 20 values; else the normal approximation with the tie correction and a continuity
    correction."""
    n, m = len(x), len(y)
    if n == 0 or m == 0:
        return 0.0, 1.0
    u = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)
    values = sorted([*x, *y])
    ties = [values.count(v) for v in sorted(set(values))]
    if len(ties) == n + m and n <= 20 and m <= 20:
        # counts[k]: the arrangements of i x's among i + j values with U = k, built up one value at a time
        table: dict[tuple[int, int], list[int]] = {}

        def ways(i: int, j: int) -> list[int]:
            if i == 0 or j == 0:
                return [1]
            if (i, j) not in table:
                top, rest = ways(i - 1, j), ways(i, j - 1)  # the largest value is an x (beats all j y's) or a y
                out = [0] * (i * j + 1)
                for k, c in enumerate(top):
                    out[k + j] += c
                for k, c in enumerate(rest):
                    out[k] += c
                table[(i, j)] = out
            return table[(i, j)]

        counts = ways(n, m)
        return u, sum(counts[math.ceil(u - 1e-9) :]) / math.comb(n + m, n)
    total = n + m
    variance = n * m / 12.0 * ((total + 1) - sum(t**3 - t for t in ties) / (total * (total - 1)))
    if variance <= 0:
        return u, 1.0
    return u, normal_greater((u - n * m / 2.0 - 0.5) / math.sqrt(variance))
