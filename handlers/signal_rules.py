"""Signal classes of SDK v2 model monitoring (``drift.classes``): what a breach of each monitor signal
does (docs/policy.md, "Signal classes").

- ``retrain`` (the default): a breach starts the model's retrain, through every guard;
- ``retrain_now``: a breach starts it past the cooldown (a performance breach that cannot wait), still
  within the daily budget, the single flight and the freezes;
- ``veto``: a breach blocks the retrain a breach of another signal of the *same monitor run* asks for
  (a data-quality breach: retraining on corrupted data makes it worse), and is published as an
  incident (``retrain.decision.<action>.vetoed``);
- ``record``: a breach is recorded, never acted on.

The monitor run is the pipeline run of one scheduled monitor pass; each signal is evaluated in its own
step, whose run carries the breach tag (azureml-assets, model monitoring's ``evaluate_metrics_threshold``
tags the step's run, ``add_tags_to_run``). Pure: the policy's keys and the class of a signal; what a
breach decides is :mod:`handlers.breaches`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

CLASSES = ("retrain", "retrain_now", "veto", "record")
SignalClass = Literal["retrain", "retrain_now", "veto", "record"]
DEFAULT: SignalClass = "retrain"
_SIGNAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


def checked_classes(value: Any) -> Any:
    """``drift.classes`` as given, or a ValueError naming the signal and the fix (pydantic reports it
    under the key)."""
    if not isinstance(value, Mapping):
        raise ValueError(  # noqa: TRY004 (pydantic reports ValueError)
            "classes maps monitor signal names to a class, e.g. {data_drift: retrain, accuracy: retrain_now, "
            "data_quality: veto, prediction_drift: record}"
        )
    out: dict[str, str] = {}
    for name, cls in value.items():
        if not isinstance(name, str) or not _SIGNAL.match(name):
            raise ValueError(
                f"{str(name)[:60]!r} is not a monitor signal name; use the signal's name as the monitor defines it "
                "(letters, digits, '_', '-', '.'), e.g. data_drift_signal"
            )
        if cls not in CLASSES:
            raise ValueError(
                f"signal {name!r}: {str(cls)[:40]!r} is not a signal class; write one of {', '.join(CLASSES)}"
            )
        if name.lower() in {k.lower() for k in out}:
            raise ValueError(f"signal {name!r} is given a class twice (names compare case-insensitively); keep one")
        out[name] = str(cls)
    return out


def class_problem(classes: Mapping[str, str], signals: list[str], monitors: list[str]) -> str | None:
    """What is wrong with ``drift.classes`` beside the rule's other keys, or None."""
    if classes and not monitors:
        return "classes needs drift.monitors: name the v2 model monitors whose signals they class"
    listed = {s.lower() for s in signals}
    if listed:
        unlisted = [name for name in classes if name.lower() not in listed]
        if unlisted:
            return (
                f"classes names {', '.join(map(repr, unlisted))}, which drift.signals does not list, so a breach of "
                "it would be skipped before its class counts; add it to drift.signals or remove its class"
            )
    return None


def class_of(classes: Mapping[str, str], signal: str | None) -> str:
    """The class of a breach of ``signal`` (names compare case-insensitively; unnamed: ``retrain``)."""
    key = (signal or "").lower()
    return next((str(cls) for name, cls in classes.items() if name.lower() == key), DEFAULT)


def vetoes(classes: Mapping[str, str]) -> list[str]:
    """The signals whose breach in the same monitor run blocks a retrain."""
    return sorted(name for name, cls in classes.items() if cls == "veto")
