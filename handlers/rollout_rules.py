"""The rollout's part of the policy (``deploy.rollout``): the steps, the bake, the health check
between steps and the smoke test before any traffic. :mod:`handlers.policy` assembles it into a model's deploy rule; see docs/rollouts.md."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, JsonValue, Tag, field_validator, model_validator

from handlers.guard_rules import GuardsRule
from handlers.policy_base import Duration, Strict, asset_version
from handlers.records import span
from handlers.rollout.traffic import MAX_MIRROR

_FAILURE_CLASSES = ("5xx", "4xx", "model_5xx")
DEFAULT_LAG = {"metrics": timedelta(minutes=3), "logs": timedelta(minutes=5)}
MAX_HISTORY = timedelta(hours=24)  # the baseline's minutes before the rollout read at most (health.history)


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
    ``hold`` (stay at the step and keep waiting for traffic) or ``promote`` (go on unverified).
    ``history`` (default 1h, at most 24h): how much of the baseline's traffic from before the rollout
    is read beside each step, for its calm failure rate and how much that rate varies minute to minute."""

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
    history: Duration = timedelta(hours=1)

    @field_validator("history")
    @classmethod
    def _history(cls, value: timedelta) -> timedelta:
        if not timedelta(0) <= value <= MAX_HISTORY:
            raise ValueError(
                f"{span(value)} is not a history the judge reads; write a duration from 0m (none: the baseline's minutes "
                "in the rollout only) to 24h, e.g. 1h"
            )
        return value

    def source_or(self, default: str = "metrics") -> str:
        """The source to read: the policy's, else ``default`` (the service's setting)."""
        return self.source or default

    def lag_for(self, source: str) -> timedelta:
        """How long before now a step's window ends when read from ``source``: ``lag``, or the
        source's ingestion lag."""
        return self.lag if self.lag is not None else DEFAULT_LAG[source]


MAX_SMOKE_REQUESTS = 20
MAX_SMOKE_REQUEST_BYTES = 16_384  # one sample request, as JSON: the policy is kept small
MAX_SMOKE_TIME = timedelta(minutes=5)  # all requests at their timeout, the champion's included: one reconciler pass
MAX_SMOKE_WAIT = timedelta(hours=24)  # smoke.max_wait: the longest a smoke test stays deferred (outage, 401, 429)


def _schema(value: Any) -> Any:
    """A JSON schema (draft 2020-12) the candidate's answers must satisfy, checked as a schema here."""
    if not isinstance(value, dict):
        return value  # pydantic reports the type
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top)"
        raise ValueError(
            f"not a valid JSON schema at {where}: {exc.message}; write a JSON schema (draft 2020-12) such as "
            "{type: object, required: [predictions]}"
        ) from None
    return value


class ChampionRule(Strict):
    """How far the candidate's answers to the smoke requests may be from the champion's (the deployment
    that serves most of the endpoint's traffic) to the same requests: ``field``, where the answer is
    (a dotted path into the JSON body, e.g. ``predictions`` or ``result.scores``; default the whole
    body); numbers within ``abs_tolerance`` or ``rel_tolerance`` (of the champion's), anything else
    (labels, booleans, the shape) equal."""

    field: str | None = None
    abs_tolerance: float = Field(default=0.0, ge=0)
    rel_tolerance: float = Field(default=0.0, ge=0)

    @field_validator("field")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(not part for part in value.split("."))):
            raise ValueError(
                f"{value!r} is not a path into the answer; write key names joined by dots, e.g. predictions or "
                "result.scores (leave it out to compare the whole answer)"
            )
        return value


class SmokeData(Strict):
    """Sample requests kept in a data asset (``deploy.rollout.smoke.requests: {data: azureml:name:version}``):
    a ``uri_file`` asset whose file holds one JSON request a line (JSON lines); the first ``count`` lines
    are sent. The asset and its version are named, so the requests a rollout sends are the ones reviewed.
    The file is read when the smoke test runs (the Azure ML data asset, then its blob in the datastore's
    storage account, as the service's identity); one that cannot be read fails the smoke test."""

    data: str
    count: int = Field(default=10, ge=1, le=MAX_SMOKE_REQUESTS)

    @field_validator("data")
    @classmethod
    def _asset(cls, value: str) -> str:
        why = "a uri_file asset with one JSON request a line; a version, not @latest, so the requests sent are the ones reviewed"
        return asset_version(value, "churn-smoke-requests:3", why)

    @property
    def name(self) -> str:
        return self.data.split(":")[1]

    @property
    def version(self) -> str:
        return self.data.split(":")[2]


def _requests_kind(value: Any) -> str:
    """``requests`` is the sample requests themselves (a list) or a data asset that holds them (a mapping)."""
    return "tag-asset" if isinstance(value, (dict, SmokeData)) else "tag-inline"


class SmokeRule(Strict):
    """The smoke test once the candidate is provisioned, before it gets any traffic (docs/rollouts.md):
    each of ``requests`` (JSON bodies) is sent to the candidate by deployment name, and must be answered
    ``status`` within ``timeout``, with a JSON body that satisfies ``response_schema`` (if set) and, with
    ``champion``, close enough to the champion's answer to the same request. Any request that fails
    rolls the candidate back before the traffic changes, unless the live deployment fails it too on an
    answer an outage gives (:mod:`handlers.rollout.smoke_outage`): then the smoke test is tried again
    on the next pass, for at most ``max_wait`` from its first deferral, as when the endpoint refuses the
    service's identity (401) or throttles (429) (0s: never; the candidate is rolled back at once).
    ``load``: a step whose bake is over with fewer than ``health.min_requests`` requests gets up to
    this many synthetic requests (the sample requests in turn), once, for the health source to judge
    (0: none)."""

    requests: Annotated[
        Annotated[list[JsonValue], Tag("tag-inline")] | Annotated[SmokeData, Tag("tag-asset")],
        Discriminator(_requests_kind),
    ]
    status: int = Field(default=200, ge=100, le=599)
    response_schema: Annotated[dict[str, Any] | None, BeforeValidator(_schema)] = None
    champion: ChampionRule | None = None
    timeout: Duration = timedelta(seconds=10)
    load: int = Field(default=0, ge=0, le=200)
    max_wait: Duration = timedelta(hours=1)

    @field_validator("requests")
    @classmethod
    def _small(cls, requests: list[JsonValue] | SmokeData) -> list[JsonValue] | SmokeData:
        if isinstance(requests, SmokeData):
            return requests
        if not 1 <= len(requests) <= MAX_SMOKE_REQUESTS:
            raise ValueError(
                f"{len(requests)} sample requests; write 1 to {MAX_SMOKE_REQUESTS} JSON bodies, or name a data asset "
                "that holds them: {data: azureml:<name>:<version>}"
            )
        for i, body in enumerate(requests):
            size = len(json.dumps(body))
            if size > MAX_SMOKE_REQUEST_BYTES:
                raise ValueError(
                    f"request {i} is {size} bytes as JSON, more than {MAX_SMOKE_REQUEST_BYTES}; "
                    "use a smaller sample request"
                )
        return requests

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(seconds=90):
            raise ValueError("the per-request timeout must be from 1s to 90s, e.g. 10s")
        return value

    @field_validator("max_wait")
    @classmethod
    def _max_wait(cls, value: timedelta) -> timedelta:
        if not timedelta(0) <= value <= MAX_SMOKE_WAIT:
            raise ValueError(
                f"{span(value)} is not a wait for a deferred smoke test; write a duration from 0s (never wait: a smoke "
                "test an outage, a 401 or a 429 defers rolls the candidate back at once) to "
                f"{span(MAX_SMOKE_WAIT)}, e.g. 1h"
            )
        return value

    @property
    def count(self) -> int:
        """How many sample requests are sent (those of a data asset: at most its ``count``)."""
        return self.requests.count if isinstance(self.requests, SmokeData) else len(self.requests)

    @property
    def where(self) -> str:
        """Where the sample requests are, said after their count: '' for the policy's own."""
        return f" (at most, from data asset {self.requests.data})" if isinstance(self.requests, SmokeData) else ""

    @model_validator(mode="after")
    def _fits_a_pass(self) -> SmokeRule:
        calls = self.count * (2 if self.champion is not None else 1)
        if calls * self.timeout > MAX_SMOKE_TIME:
            raise ValueError(
                f"{calls} requests of up to {int(self.timeout.total_seconds())}s each may take longer than "
                f"{int(MAX_SMOKE_TIME.total_seconds() // 60)}m, which one reconciler pass may spend on a smoke "
                "test (the requests an outage may have failed go to the live deployment in what is left); "
                "send fewer requests or set a shorter timeout"
            )
        if self.load * self.timeout > MAX_SMOKE_TIME:
            raise ValueError(
                f"a synthetic load of {self.load} requests of up to {int(self.timeout.total_seconds())}s each may take "
                f"longer than {int(MAX_SMOKE_TIME.total_seconds() // 60)}m, which one reconciler pass may spend on it; "
                "set a smaller load or a shorter timeout"
            )
        return self


def _mirror_percent(value: Any) -> Any:
    """``percent`` of ``deploy.rollout.mirror``: a whole number from 1 to 50, said in Azure's terms."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a percent; write a whole number from 1 to {MAX_MIRROR}, e.g. 10")  # noqa: TRY004 (pydantic reports ValueError)
    if value < 1:
        raise ValueError(f"{value} mirrors nothing; write a percent from 1 to {MAX_MIRROR}, or leave 'mirror' out")
    if value > MAX_MIRROR:
        raise ValueError(
            f"{value}% is more than Azure ML mirrors ({MAX_MIRROR}% of an endpoint's traffic at most, \"Safe rollout "
            f'for online endpoints"); write a percent from 1 to {MAX_MIRROR}'
        )
    return value


class MirrorRule(Strict):
    """The shadow stage (``deploy.rollout.mirror``): once the candidate is provisioned, the endpoint
    mirrors ``percent`` of its live traffic to it (Azure ML's ``mirror_traffic``: a copy of each
    request, whose answer no client sees), for ``bake``; the candidate is judged on those requests
    against the live deployment by the same analysis as a step (errors and latency, the ``health``
    rule). Healthy: the mirror is cleared and the candidate gets ``steps[0]`` of the live traffic;
    unhealthy: it is rolled back, its traffic never live. ``bake`` defaults to the rollout's."""

    percent: Annotated[int, BeforeValidator(_mirror_percent)]
    bake: Duration | None = None

    @field_validator("bake")
    @classmethod
    def _bakes(cls, bake: timedelta | None) -> timedelta | None:
        if bake is not None and bake <= timedelta(0):
            raise ValueError("a shadow stage of 0s judges nothing; write a duration such as '10m', or leave it out")
        return bake


class RolloutRule(Strict):
    steps: list[Annotated[int, Field(gt=0, le=100)]] = Field(default_factory=lambda: [10, 50, 100])
    bake: Duration = timedelta(minutes=15)
    health: HealthRule = Field(default_factory=HealthRule)
    guards: GuardsRule = Field(default_factory=GuardsRule)  # handlers/guard_rules.py: alerts and query guards
    smoke: SmokeRule | None = None
    mirror: MirrorRule | None = None

    def mirror_stage(self) -> RolloutRule:
        """The rule the shadow stage is judged by: this one, with the mirror's bake (the same health
        rule, limits and comparison, its share of the rollout's error among the steps'). Raises
        ValueError without a ``mirror``."""
        if self.mirror is None:
            raise ValueError("no deploy.rollout.mirror: the rollout has no shadow stage")
        return self.model_copy(update={"bake": self.mirror.bake or self.bake})

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
