"""The rollout's part of the policy (``deploy.rollout``): the steps, the bake and the health check
between steps. :mod:`handlers.policy` assembles it into a model's deploy rule; see docs/rollouts.md."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from handlers.guard_rules import GuardsRule
from handlers.policy_base import Duration, Strict

_FAILURE_CLASSES = ("5xx", "4xx", "model_5xx")
DEFAULT_LAG = {"metrics": timedelta(minutes=3), "logs": timedelta(minutes=5)}


def _failure_codes(value: Any) -> Any:
    """``[5xx, 408, 424, model_5xx]``: ResponseCode classes, single ResponseCodes, the model's 5xx."""
    if isinstance(value, (str, int)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return value  # pydantic reports the type
    if not value:
        raise ValueError("no failure codes; leave the key out for the default [5xx, 408, 424, model_5xx]")
    out: list[str] = []
    for item in value:
        text = str(item).strip().lower()
        if text == "429":
            raise ValueError("429 is throttling, judged by max_throttle_rate, not a failure; remove it")
        if text not in _FAILURE_CLASSES and not (text.isdigit() and 400 <= int(text) <= 599):
            raise ValueError(
                f"{item!r} is not a failure code; write '5xx', '4xx', 'model_5xx' or a status code from 400 to 599 "
                "such as 408"
            )
        if text not in out:
            out.append(text)
    return tuple(out)


class HealthRule(Strict):
    """The health check between rollout steps (handlers/analysis.py): over a step's bake window the
    candidate deployment must have served at least ``min_requests`` requests, with a share of
    failures (``failure_codes``: by default 5xx, 408, 424 and a model status >= 500) of at most
    ``max_error_rate`` and, if set, a p95 latency of at most ``max_latency_ms``; and, against the
    live deployment over the same window, no failure rate higher at ``confidence`` (over the whole
    rollout) and a p95 at most ``max_latency_ratio`` times the live one's. 429s are throttling,
    limited by ``max_throttle_rate`` when set. The numbers come from ``source``: ``metrics`` (the
    endpoint's platform metrics, no setup) or ``logs`` (the endpoint's traffic log in Log
    Analytics); unset, the service's setting decides (metrics by default: :meth:`source_or`). The
    window ends ``lag`` before now (default: the source's, 3m for metrics, 5m for logs). With
    fewer requests the step keeps baking, up to ``max_bake`` (default three bakes), and then
    ``on_no_traffic`` decides: ``rollback`` (the default: nothing unverified gets more traffic),
    ``hold`` (stay at the step and keep waiting for traffic) or ``promote`` (go on unverified)."""

    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    min_requests: int = Field(default=20, ge=0)
    max_latency_ms: float | None = Field(default=None, gt=0)
    max_bake: Duration | None = None
    on_no_traffic: Literal["promote", "hold", "rollback"] = "rollback"
    source: Literal["metrics", "logs"] | None = None
    failure_codes: Annotated[tuple[str, ...], BeforeValidator(_failure_codes)] = ("5xx", "408", "424", "model_5xx")
    confidence: float = Field(default=0.99, ge=0.5, lt=1)
    max_latency_ratio: float | None = Field(default=1.5, ge=1)
    max_throttle_rate: float | None = Field(default=None, ge=0, le=1)
    lag: Duration | None = None

    def source_or(self, default: str = "metrics") -> str:
        """The source to read: the policy's, else ``default`` (the service's setting)."""
        return self.source or default

    def lag_for(self, source: str) -> timedelta:
        """How long before now a step's window ends when read from ``source``: ``lag``, or the
        source's ingestion lag."""
        return self.lag if self.lag is not None else DEFAULT_LAG[source]


class RolloutRule(Strict):
    steps: list[Annotated[int, Field(gt=0, le=100)]] = Field(default_factory=lambda: [10, 50, 100])
    bake: Duration = timedelta(minutes=10)
    health: HealthRule = Field(default_factory=HealthRule)
    guards: GuardsRule = Field(default_factory=GuardsRule)  # handlers/guard_rules.py: alerts and query guards

    @property
    def longest_bake(self) -> timedelta:
        """How long a step waits for enough traffic before ``health.on_no_traffic`` decides."""
        limit = self.health.max_bake if self.health.max_bake is not None else 3 * self.bake
        return max(limit, self.bake)

    @field_validator("steps")
    @classmethod
    def _ends_at_100(cls, steps: list[int]) -> list[int]:
        if not steps or steps[-1] != 100 or steps != sorted(set(steps)):
            raise ValueError("steps must rise strictly and end at 100, e.g. [10, 50, 100]")
        return steps
