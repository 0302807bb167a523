"""Rollout analysis benchmark: simulated rollouts judged by the real verdict code.

An endpoint serves 600 requests a minute; the live deployment fails 1% of them. A candidate goes
through the default policy's steps ([10, 50, 100] % of the traffic, a 10-minute bake each). Every
minute each request is routed to the candidate with its step's share and fails with its
deployment's rate; a failure is a 424 (the model answered 500) half of the time, a 408 a quarter
and a 503 a quarter. The readings, counted per minute as the platform metrics give them, are
judged by:

- **today**: the rule the service had before the analysis (absolute limits, once per bake, on what its
  query counted, ``ResponseCode >= 500``: the 503s only), that is ``handlers.analysis.absolute`` with
  ``failure_codes: [5xx]``;
- **absolute**: ``handlers.analysis.absolute``, the same limits on the failures users feel;
- **analysis**: ``handlers.analysis.judge`` against the live deployment over the same window, looked
  at every minute (fail fast), with the policy's defaults.

For each candidate failure rate it prints how many of the rollouts were rolled back, how many in
the first bake, and the minutes of traffic until the rollback (median and worst). The 1% candidate
is as good as the live deployment: its rollbacks are false rollbacks.

    .venv/bin/python bench/rollout_sim.py [--rollouts 1000] [--seed 11]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from handlers import analysis  # noqa: E402
from handlers.rollout_rules import RolloutRule  # noqa: E402

PER_MINUTE = 600
BASELINE_RATE = 0.01
CANDIDATE_RATES = (0.01, 0.015, 0.02, 0.05, 0.20, 1.00)
MIX = ((424, 500, 0.5), (408, None, 0.25), (503, None, 0.25))  # (ResponseCode, ModelStatusCode, share)


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A Binomial(n, p) draw: by inversion while n * p is small, else the normal approximation."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    mean = n * p
    if mean < 50:
        u, k = rng.random(), 0
        term = (1.0 - p) ** n
        total = term
        while u > total and k < n:
            term *= (n - k) / (k + 1) * p / (1.0 - p)
            k += 1
            total += term
        return k
    return min(n, max(0, round(rng.gauss(mean, math.sqrt(mean * (1.0 - p))))))


@dataclass
class Tally:
    """One deployment's requests over a step: code pair -> requests, and latency samples."""

    codes: dict[tuple[int, int | None], int]
    p95_weighted: float = 0.0

    @classmethod
    def empty(cls) -> Tally:
        return cls({})

    def serve(self, rng: random.Random, n: int, rate: float) -> None:
        failed = binomial(rng, n, rate)
        left = failed
        for i, (code, model, share) in enumerate(MIX):
            k = left if i == len(MIX) - 1 else binomial(rng, left, share / sum(s for _, _, s in MIX[i:]))
            left -= k
            self.codes[(code, model)] = self.codes.get((code, model), 0) + k
        self.codes[(200, 200)] = self.codes.get((200, 200), 0) + n - failed
        self.p95_weighted += n * (40.0 + rng.gauss(0.0, 2.0))

    def reading(self, deployment: str, minutes: int) -> analysis.Reading:
        requests = sum(self.codes.values())
        p95 = self.p95_weighted / requests if requests else None
        return analysis.Reading.of("ep", deployment, "0", str(minutes), self.codes, p95, "metrics", "simulated")


Judge = Callable[[RolloutRule, Tally, Tally, int], str]


def judge_today(rule: RolloutRule, cand: Tally, base: Tally, minutes: int) -> str:
    """The old rule: absolute limits on the 5xx alone (what its query counted)."""
    old = rule.model_copy(update={"health": rule.health.model_copy(update={"failure_codes": ("5xx",)})})
    return analysis.absolute(old, cand.reading("cand", minutes), timedelta(minutes=minutes)).next


def judge_absolute(rule: RolloutRule, cand: Tally, base: Tally, minutes: int) -> str:
    return analysis.absolute(rule, cand.reading("cand", minutes), timedelta(minutes=minutes)).next


def judge_analysis(rule: RolloutRule, cand: Tally, base: Tally, minutes: int) -> str:
    baseline = base.reading("blue", minutes) if sum(base.codes.values()) else None
    return analysis.judge(rule, cand.reading("cand", minutes), baseline, timedelta(minutes=minutes)).next


def one_rollout(rng: random.Random, rule: RolloutRule, rate: float, judge: Judge, every_minute: bool) -> int | None:
    """Minutes of traffic until the rollback, or None when the candidate was promoted."""
    bake = int(rule.bake.total_seconds() // 60)
    longest = int(rule.longest_bake.total_seconds() // 60)
    elapsed = 0
    for percent in rule.steps:
        cand, base = Tally.empty(), Tally.empty()
        for minute in range(1, longest + 1):
            n = binomial(rng, PER_MINUTE, percent / 100)
            cand.serve(rng, n, rate)
            base.serve(rng, PER_MINUTE - n, BASELINE_RATE)
            elapsed += 1
            if minute < bake and not every_minute:
                continue
            nxt = judge(rule, cand, base, minute)
            if nxt == "rollback":
                return elapsed
            if nxt in ("advance", "hold"):
                break
    return None


def measure(
    rule: RolloutRule, judge: Judge, every_minute: bool, rollouts: int, seed: int
) -> dict[float, list[int | None]]:
    out: dict[float, list[int | None]] = {}
    for i, rate in enumerate(CANDIDATE_RATES):
        rng = random.Random(seed * 1000 + i)
        out[rate] = [one_rollout(rng, rule, rate, judge, every_minute) for _ in range(rollouts)]
    return out


def describe(results: list[int | None], first_bake: int) -> tuple[str, str, str, str]:
    caught = [m for m in results if m is not None]
    share = len(caught) / len(results)
    early = sum(1 for m in caught if m <= first_bake) / len(results)
    median = f"{statistics.median(caught):g}" if caught else "-"
    worst = f"{max(caught)}" if caught else "-"
    return f"{share:.1%}", f"{early:.1%}", median, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rule = RolloutRule()
    bake = int(rule.bake.total_seconds() // 60)
    health = rule.health
    print(
        f"{args.rollouts} rollouts per candidate; endpoint {PER_MINUTE} requests/min, baseline {BASELINE_RATE:.0%} "
        f"failures; steps {rule.steps}, bake {bake} min; max_error_rate {health.max_error_rate:g}, "
        f"min_requests {health.min_requests}, confidence {health.confidence:g}; seed {args.seed}"
    )
    started = time.perf_counter()
    rules = {
        "today": measure(rule, judge_today, False, args.rollouts, args.seed),
        "absolute": measure(rule, judge_absolute, False, args.rollouts, args.seed),
        "analysis": measure(rule, judge_analysis, True, args.rollouts, args.seed),
    }
    print()
    print(
        "| candidate failures | today: rolled back | today: median min | absolute on failures: rolled back "
        "| absolute: median min | analysis: rolled back | analysis: in the first bake | analysis: median min "
        "| analysis: worst min |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for rate in CANDIDATE_RATES:
        kind = " (as good as the baseline)" if rate == BASELINE_RATE else ""
        today, absolute, new = (describe(results[rate], bake) for results in rules.values())
        cells = [today[0], today[2], absolute[0], absolute[2], *new]
        print(f"| {rate:.1%}{kind} | " + " | ".join(cells) + " |")
    print()
    new = rules["analysis"]
    false = sum(1 for m in new[BASELINE_RATE] if m is not None) / args.rollouts
    five = sum(1 for m in new[0.05] if m is not None and m <= bake) / args.rollouts
    total = new[1.00]
    all_fast = all(m is not None and m <= 2 for m in total)
    print(f"goal: false rollbacks <= 1%: {false:.1%} {'met' if false <= 0.01 else 'NOT met'}")
    print(f"goal: >= 99% of 5% candidates caught in the first bake: {five:.1%} {'met' if five >= 0.99 else 'NOT met'}")
    print(f"goal: every 100% candidate caught within 2 minutes of traffic: {'met' if all_fast else 'NOT met'}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
