"""One delivery, one deadline: Event Grid waits 30 s for the answer to a whole delivery (one event,
or a webhook batch), not per action. Kept apart from :mod:`function_app.retry` so that the trigger
functions can mark a delivery without importing tenacity or azure-core at start-up.

A delivery is also one span (:mod:`function_app.telemetry`, a no-op when telemetry is off), and when
it ends the notifications its decisions left in the ledger's outbox are sent: one attempt, which
never raises into the delivery (what is not sent stays pending for the reconciler).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from function_app import telemetry

# When the current delivery's first budget started, by the clock it was measured on.
_starts: ContextVar[dict[int, float] | None] = ContextVar("retrain_delivery", default=None)


@contextmanager
def one_delivery(kind: str = "event", **attributes: Any) -> Iterator[telemetry.Span]:
    """Everything inside is one delivery with one deadline: the first retry budget started inside
    fixes its start, and every later budget (another model's action, the next event of the batch)
    ends when that one does. It is one span (``retrain.delivery``, with ``kind``); on the way out,
    after the deadline, the worker's pending notifications get one attempt."""
    with telemetry.span("retrain.delivery", kind=kind, **attributes) as span:
        token = _starts.set({})
        try:
            yield span
        finally:
            _starts.reset(token)
            _notify()


def _notify() -> None:
    """One attempt at the outbox, if this worker has its service built (it does once it decided)."""
    from function_app.runtime import current_retrainer

    retrainer = current_retrainer()
    if retrainer is not None and retrainer.outbox.enabled:
        retrainer.notify()


def budget_start(clock: Callable[[], float]) -> float:
    """When a budget starting now on ``clock`` counts from: now, or inside :func:`one_delivery`,
    when the delivery's first budget on that clock started."""
    starts = _starts.get()
    if starts is None:
        return clock()
    return starts.setdefault(id(clock), clock())
