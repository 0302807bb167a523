"""The rollout family: a candidate deployment moved from 0% to all of the endpoint's traffic, one
transition at a time, and the deployments it leaves behind retired.

- :mod:`handlers.rollout.progress`: the traffic splits, the transitions and the rollout's progress
  kept in its flight, as pure rules;
- :mod:`handlers.rollout.stepper`: the reconciler's pass, which decides one transition per rollout;
- :mod:`handlers.rollout.retire`: which demoted deployments and rejected candidates to delete.
"""
