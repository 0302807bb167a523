"""The rollout's error budget: how ``1 - confidence`` is spent between the comparison with the baseline,
the steps and the looks of a step (:func:`step_alpha`, :data:`FINAL_SHARE`, :data:`INTERIM_SHARE`).
What the comparison does not spend is left to the rules its level does not bound (the absolute limits,
the bursts without a baseline, the every-request-failing rules of :mod:`handlers.all_failed`).

Pure: stdlib only, no I/O, no clock read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
