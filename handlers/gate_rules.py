"""The candidate gate's part of the policy (``deploy.gate``): which metrics a candidate is judged on
against the champion, and which of them must pass (:mod:`handlers.gate` judges them).

Two forms. One metric, as before::

    gate: {metric: r2_score, floor: 0.4, margin: 0.01}

Several, each with its direction, floor and margins, and per-slice metrics that must not regress::

    gate:
      metrics:
        - {name: r2_score, floor: 0.4, margin: 0.01, relative_margin: 0.02,
           slices: {pattern: "r2_score_region_*", tolerance: 0.005}}
        - {name: mae, higher_is_better: false, margin: -0.5}   # may be up to 0.5 worse
      require: all                                             # or a list of the names that decide

See docs/policy.md ("The candidate gate").
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from handlers.policy_base import Strict

_PATTERN = re.compile(r"^[A-Za-z0-9_.\-/:=*?\[\] ]{1,200}$")
MAX_METRICS = 10


class SliceRule(Strict):
    """Per-slice metrics of a gate metric (``slices``): every candidate metric whose name matches
    ``pattern`` (shell-style: ``*``, ``?``, ``[...]``, case-insensitive), compared with the champion's
    metric of the same name, may be at most ``tolerance`` worse; a slice the champion has and the
    candidate lacks fails (a protected slice is not shown to hold by its absence), and so do more
    than :data:`MAX_SLICES` matching names (narrow the pattern)."""

    pattern: str
    tolerance: float = Field(default=0.0, ge=0)

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if not _PATTERN.match(value) or not any(c in value for c in "*?["):
            raise ValueError(
                f"{value!r} is not a slice pattern; write an MLflow metric name with a wildcard, "
                "e.g. 'r2_score_region_*' (letters, digits, _ . - / : = and * ? [ ], at most 200 characters)"
            )
        return value


class MetricRule(Strict):
    """One gate metric: the candidate must carry ``name`` (numeric), reach ``floor`` and, when the
    champion carries it, be better by at least ``margin`` (absolute; 0, the default: strictly better;
    negative: may be that much worse) and, when set, by ``relative_margin`` times the champion's
    value (0.02: 2% better; negative: may be that share worse)."""

    name: str = Field(min_length=1, max_length=250)
    higher_is_better: bool = True
    floor: float | None = None
    margin: float = 0.0
    relative_margin: float | None = Field(default=None, ge=-1, le=1)
    slices: SliceRule | None = None


class GateRule(Strict):
    """The candidate gate (handlers/gate.py): ``metric`` (with ``higher_is_better``, ``floor`` and
    ``margin`` >= 0) or a list of ``metrics``, of which ``require`` (``all``, the default, or a list
    of their names) decide; the others are judged and recorded only.
    ``source``: where the candidate's metric is read: ``mlflow`` (the default: the MLflow metrics of the
    finished pipeline run, or of its step whose display name is ``step``), ``run`` (the finished run's
    tags and properties) or ``model`` (the candidate model version's tags and properties)."""

    metric: str | None = Field(default=None, min_length=1)
    higher_is_better: bool = True
    floor: float | None = None
    margin: float = Field(default=0.0, ge=0)
    metrics: list[MetricRule] | None = Field(default=None, min_length=1, max_length=MAX_METRICS)
    require: Literal["all"] | list[str] = "all"
    source: Literal["mlflow", "run", "model"] = "mlflow"
    step: str | None = Field(default=None, description="display name of the pipeline step")

    @field_validator("step")
    @classmethod
    def _step(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                "an empty step; write the display name of the pipeline step whose MLflow run logged the metric "
                "(e.g. evaluate_model), or leave it out to read the pipeline run's own metrics"
            )
        return value

    @field_validator("require", mode="before")
    @classmethod
    def _require(cls, value: Any) -> Any:
        if value != "all" and not isinstance(value, list):
            raise ValueError(f"{str(value)[:60]!r}: write 'all' or a list of the gate's metric names, e.g. [auc, f1]")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> GateRule:
        if self.step is not None and self.source != "mlflow":
            raise ValueError(
                f"'step' names a pipeline step whose MLflow metrics are read; it needs source: mlflow, not {self.source}"
            )
        if (self.metric is None) == (self.metrics is None):
            raise ValueError(
                "write either 'metric' (one metric, with higher_is_better, floor and margin beside it) or "
                "'metrics' (a list, each with its own name, higher_is_better, floor, margin, relative_margin "
                "and slices), not both and not neither"
            )
        if self.metrics is not None:
            loose = {"higher_is_better": True, "floor": None, "margin": 0.0}
            beside = sorted(k for k, default in loose.items() if getattr(self, k) != default)
            if beside:
                raise ValueError(
                    f"{', '.join(beside)} beside 'metrics' belong to a metric: move them into its entry in the list"
                )
            names = [m.name.lower() for m in self.metrics]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"metric(s) {', '.join(twice)} listed twice in 'metrics'; list each once")
        if isinstance(self.require, list):
            known = {m.name.lower() for m in self.rules}
            unknown = [n for n in self.require if n.lower() not in known]
            if not self.require or unknown:
                raise ValueError(
                    f"require names {', '.join(map(repr, unknown)) or 'no metric'}; write 'all' or a non-empty list "
                    f"of the gate's metrics: {', '.join(m.name for m in self.rules)}"
                )
        return self

    @property
    def rules(self) -> list[MetricRule]:
        """Every metric the gate judges, the one-metric form included."""
        if self.metrics is not None:
            return list(self.metrics)
        assert self.metric is not None
        return [
            MetricRule(name=self.metric, higher_is_better=self.higher_is_better, floor=self.floor, margin=self.margin)
        ]

    def required(self, name: str) -> bool:
        """Whether ``name``'s verdict decides the gate."""
        return self.require == "all" or name.lower() in {n.lower() for n in self.require}

    @property
    def first(self) -> str:
        """The first metric's name: what one-line summaries name."""
        return self.rules[0].name
