"""The trigger functions' frame around one delivery: its deadline (:mod:`function_app.deadline`), one
span (:mod:`function_app.telemetry`, a no-op when telemetry is off), and when it ends the notifications
its decisions left in the ledger's outbox are sent: one attempt, which never raises into the delivery
(what is not sent stays pending for the reconciler).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from function_app import telemetry
from function_app.deadline import one_deadline
from function_app.runtime import current_retrainer

__all__ = ["one_delivery"]


@contextmanager
def one_delivery(kind: str = "event", **attributes: Any) -> Iterator[telemetry.Span]:
    """Everything inside is one delivery with one deadline (:func:`function_app.deadline.one_deadline`).
    It is one span (``retrain.delivery``, with ``kind``); on the way out, after the deadline, the
    worker's pending notifications get one attempt."""
    with telemetry.span("retrain.delivery", kind=kind, **attributes) as span:
        try:
            with one_deadline():
                yield span
        finally:
            _notify()


def _notify() -> None:
    """One attempt at the outbox, if this worker has its service built (it does once it decided)."""
    retrainer = current_retrainer()
    if retrainer is not None and retrainer.outbox.enabled:
        retrainer.notify()
