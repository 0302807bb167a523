"""The rollout family: a candidate deployment moved from 0% to all of the endpoint's traffic, one
transition at a time, and the deployments it leaves behind retired.

- :mod:`handlers.rollout.progress`: a rollout's progress (kept in its flight), its transitions and
  the one table of transition kinds;
- :mod:`handlers.rollout.changes`: the changes to a rollout flight the ledger applies atomically;
- :mod:`handlers.rollout.traffic`: the traffic split of each step;
- :mod:`handlers.rollout.stepper`: the reconciler's pass, which decides one transition per rollout;
- :mod:`handlers.rollout.retire`: which demoted deployments and rejected candidates to delete.
"""
