"""What the level of the every-request-failing rule in an outage (``handlers/all_failed.py``) trades: a
healthy candidate that fails all its requests in an outage at the start of its traffic is rolled back
(a false rollback), a stricter level lets a broken one serve a third minute. The first minutes of the
first step (10%) of the bench's ``bursts`` family (``bench/rollout_sim.py``: outages of one or two minutes
failing both deployments 20-60%, one every 30 minutes) are simulated, each look laid out by the judge's
own table (:class:`handlers.look.Look`), and for each level the share of rollouts where the rule fires
(healthy) or where an all-failing candidate is not caught within 2 minutes of its traffic, by the rule on
its own minutes or by this one (all-failing), beside an analytic estimate: a minute of traffic in an
outage of rate u fails all of a healthy candidate's n requests with u**n, and the rule fires about when
u**n is below the level (the baseline's rate is well known from its 9 times as many requests).

    .venv/bin/python bench/outage_levels.py [--rollouts 40000] [--volume 60] [--seeds 20]

Tuning seeds only (1 to --seeds), as the judge was tuned.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.rollout_sim import HISTORY, Traffic, _at, reading
from handlers import all_failed
from handlers.look import Look
from handlers.rollout_rules import RolloutRule

LEVELS = (0.01, 0.02, 0.05, 0.1, 0.2)
MINUTES = 6  # the first minutes of the step looked at: the rule needs every request since they began to fail

# One look: (minutes of traffic so far, the rule on its own minutes fires, the outage rule's p-value or None)
Look_ = tuple[int, bool, float | None]


def first_minutes(rng: random.Random, rule: RolloutRule, volume: int, candidate: str) -> list[Look_]:
    traffic = Traffic(rng, "bursts", volume, candidate)
    past = reading("blue", [(m - HISTORY, traffic.minute(0.0)[1]) for m in range(HISTORY)], True).minutes
    cand: list[tuple[int, tuple[int, int, float | None]]] = []
    base: list[tuple[int, tuple[int, int, float | None]]] = []
    looks, with_traffic = [], 0
    for minute in range(MINUTES):
        c, b = traffic.minute(rule.steps[0] / 100)
        cand.append((minute, c))
        base.append((minute, b))
        with_traffic += 1 if c[0] else 0
        blue = replace(reading("blue", base, True), history=past)
        look = Look.of(rule, reading("cand", cand, True), blue, timedelta(minutes=minute + 1), _at(0))
        served, failures = look.table.own
        alone = all_failed.alone(served, failures, look.table.own_strata, rule.health.max_error_rate) is not None
        found = all_failed.in_outage(look.table.step, all_failed.answered(look.table.rows))
        looks.append((with_traffic, alone, found.p_value if found is not None else None))
    return looks


def fired(looks: list[Look_], level: float, within: int | None = None) -> bool:
    """Whether the rule on its own minutes or this one (at ``level``) fires, within ``within`` minutes of traffic."""
    return any(alone or (p is not None and p < level) for t, alone, p in looks if within is None or t <= within)


def analytic(volume: int, level: float) -> tuple[float, float]:
    """(healthy rolled back, all-failing missed) per rollout, as the module says: P(a minute is an outage's)
    = 60/61 * (1/30 + 1/60), P(it is the first of a two-minute one) = 60/61 / 60."""
    mean = volume * 0.1
    grid = [0.2 + 0.4 * (i + 0.5) / 400 for i in range(400)]

    def pois(k: int, m: float) -> float:
        return math.exp(-m + k * math.log(m) - math.lgamma(k + 1))

    healthy = sum(pois(n, mean) * sum(u**n for u in grid if u**n < level) / len(grid) for n in range(2, 80))
    missed = sum(pois(n, 2 * mean) * sum(1 for u in grid if u**n >= level) / len(grid) for n in range(2, 80))
    return 60 / 61 * (1 / 30 + 1 / 60) * healthy, 60 / 61 / 60 * missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=40000, help="rollouts of each candidate")
    parser.add_argument("--volume", type=int, default=60, help="requests a minute")
    parser.add_argument("--seeds", type=int, default=20, help="tuning seeds 1 to this, rollouts shared out")
    args = parser.parse_args()
    rule, started = RolloutRule(), time.perf_counter()
    runs: dict[str, list[list[Look_]]] = {"good": [], "all": []}
    for candidate, out in runs.items():
        for seed in range(1, args.seeds + 1):
            rng = random.Random(f"levels{seed}/{args.volume}/{candidate}")
            out.extend(first_minutes(rng, rule, args.volume, candidate) for _ in range(args.rollouts // args.seeds))
    print(
        f"{args.volume} requests a minute, bursts, the first {MINUTES} minutes of the 10% step; "
        f"{args.rollouts} rollouts each (seeds 1-{args.seeds})"
    )
    print()
    print(
        "| level | healthy rolled back by either rule (simulated) | analytic | all-failing after 2 minutes of traffic (simulated) | analytic |"
    )
    print("| --- | --- | --- | --- | --- |")
    for level in LEVELS:
        healthy = sum(fired(r, level) for r in runs["good"]) / len(runs["good"])
        missed = sum(not fired(r, level, within=2) for r in runs["all"]) / len(runs["all"])
        a_healthy, a_missed = analytic(args.volume, level)
        print(f"| {level:g} | {healthy:.4%} | {a_healthy:.4%} | {missed:.4%} | {a_missed:.4%} |")
    print()
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
