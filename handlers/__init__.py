"""The inside of the retrain service: signals, policy, decisions, guards and ports.

Nothing here imports ``azure.*`` or ``function_app``; the outside (triggers, adapters)
depends on this package, never the other way round.
"""
