"""One delivery, one deadline: Event Grid waits 30 s for the answer to a whole delivery (one event,
or a webhook batch), not per action. Standard library only, so that :mod:`function_app.retry` (whose
budgets count from here) and the trigger functions can both use it without importing each other,
tenacity or azure-core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# When the current delivery's first budget started, by the clock it was measured on.
_starts: ContextVar[dict[int, float] | None] = ContextVar("retrain_delivery", default=None)


@contextmanager
def one_deadline() -> Iterator[None]:
    """Everything inside has one deadline: the first retry budget started inside fixes its start,
    and every later budget (another model's action, the next event of the batch) ends when that one
    does."""
    token = _starts.set({})
    try:
        yield
    finally:
        _starts.reset(token)


def budget_start(clock: Callable[[], float]) -> float:
    """When a budget starting now on ``clock`` counts from: now, or inside :func:`one_deadline`,
    when the first budget on that clock started."""
    starts = _starts.get()
    if starts is None:
        return clock()
    return starts.setdefault(id(clock), clock())
