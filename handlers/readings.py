"""What a health source reads of one deployment over a step's window (:class:`Reading`), minute by
minute, and how the policy's ``failure_codes`` count it (:class:`Counts`).

A reading holds the window's histogram of ``(ResponseCode, ModelStatusCode) -> requests`` and its
p95, and the same for each minute of the window (:class:`Minute`): the platform metrics have a
one-minute grain, the traffic log is binned by minute. The judge (:mod:`handlers.analysis`) compares
the candidate with the baseline *in the same minutes*, so a minute both failed in is the endpoint's,
and estimates from the minutes how much failure rates vary beyond chance. A reading without minutes
(as read before they were) is one minute: the whole window.

Pure: stdlib only, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

# The classes a request can fail in: a ResponseCode class, one ResponseCode, or the model's own code.
DEFAULT_FAILURE_CODES = ("5xx", "408", "424", "model_5xx")
THROTTLED = 429

Code = tuple[int, int | None, int]  # (ResponseCode, ModelStatusCode or None, requests)
Codes = Mapping[tuple[int, int | None], int] | Iterable[Code]


def merged(codes: Codes) -> tuple[Code, ...]:
    """A histogram with one entry per code pair, sorted, without empty entries."""
    out: dict[tuple[int, int | None], int] = {}
    items = codes.items() if isinstance(codes, Mapping) else (((c, m), n) for c, m, n in codes)
    for (code, model), n in items:
        if n > 0:
            out[(code, model)] = out.get((code, model), 0) + int(n)
    return tuple(sorted(((c, m, n) for (c, m), n in out.items()), key=lambda t: (t[0], t[1] or -1)))


def matches(failure_code: str, code: int, model: int | None) -> bool:
    """Whether a request answered ``code`` (the model answered ``model``) is in ``failure_code``:
    '5xx' or '4xx' (a ResponseCode class; never 429), a ResponseCode such as '408', or
    'model_5xx' (the model's own code >= 500, whatever the endpoint answered)."""
    if failure_code == "model_5xx":
        return model is not None and model >= 500
    if code == THROTTLED:
        return False
    if failure_code in ("4xx", "5xx"):
        return code // 100 == int(failure_code[0])
    return failure_code.isdigit() and code == int(failure_code)


def classify(codes: Iterable[Code], classes: tuple[str, ...]) -> tuple[int, int, dict[str, int]]:
    """(requests, throttled, failures by class) of a histogram: each request in the first class it matches."""
    by_class = dict.fromkeys(classes, 0)
    requests = throttled = 0
    for code, model, n in codes:
        requests += n
        if code == THROTTLED:
            throttled += n
            continue
        hit = next((c for c in classes if matches(c, code, model)), None)
        if hit is not None:
            by_class[hit] += n
    return requests, throttled, by_class


class Minute(NamedTuple):
    """One minute of a reading: ``at`` its start (ISO), ``codes`` its histogram, ``p95_ms`` its p95."""

    at: str
    codes: tuple[Code, ...]
    p95_ms: float | None = None

    def counted(self, failure_codes: Iterable[str] = DEFAULT_FAILURE_CODES) -> tuple[int, int]:
        """(served, failures) of the minute: served = requests not throttled."""
        requests, throttled, by_class = classify(self.codes, tuple(failure_codes))
        return requests - throttled, sum(by_class.values())


def _ordered(minutes: Iterable[tuple[str, Codes, float | None]]) -> tuple[Minute, ...]:
    """Minutes by time, each histogram merged (a minute given twice is merged; its p95 is the last one given)."""
    by_minute: dict[str, tuple[dict[tuple[int, int | None], int], float | None]] = {}
    for at, minute_codes, p95 in minutes:
        histogram, _ = by_minute.get(at, ({}, None))
        for c, m, n in merged(minute_codes):
            histogram[(c, m)] = histogram.get((c, m), 0) + n
        by_minute[at] = (histogram, p95)
    return tuple(Minute(at, merged(h), p) for at, (h, p) in sorted(by_minute.items()) if h or p is not None)


@dataclass(frozen=True)
class Reading:
    """What one deployment answered over ``since``..``until`` (ISO times), from ``source``
    ('metrics', 'logs' or 'none'): ``codes`` is the histogram (ResponseCode, ModelStatusCode or
    None, requests), sorted; ``p95_ms`` the 95th percentile latency (None when unknown);
    ``request`` the query text or the metrics request that produced it; ``note`` anything unusual;
    ``minutes`` the same minute by minute (sorted; empty when the source gave none); ``history`` the
    deployment's minutes *before* the window (read for the baseline only: its minutes before the
    rollout, which tell the judge its calm failure rate and how much that rate varies from minute
    to minute; empty when not read)."""

    endpoint: str
    deployment: str
    since: str
    until: str
    codes: tuple[Code, ...]
    p95_ms: float | None
    source: str
    request: str
    note: str | None = None
    minutes: tuple[Minute, ...] = ()
    history: tuple[Minute, ...] = ()

    @classmethod
    def of(
        cls,
        endpoint: str,
        deployment: str,
        since: str,
        until: str,
        codes: Codes,
        p95_ms: float | None,
        source: str,
        request: str,
        note: str | None = None,
        minutes: Iterable[tuple[str, Codes, float | None]] = (),
        history: Iterable[tuple[str, Codes, float | None]] = (),
    ) -> Reading:
        """A reading whose histograms are merged (one entry per code pair) and sorted, its minutes
        (and its ``history``'s) by time (a minute given twice is merged; its p95 is the last one given)."""
        return cls(
            endpoint,
            deployment,
            since,
            until,
            merged(codes),
            p95_ms,
            source,
            request,
            note,
            _ordered(minutes),
            _ordered(history),
        )

    @property
    def requests(self) -> int:
        return sum(n for _, _, n in self.codes)

    @property
    def throttled(self) -> int:
        return sum(n for c, _, n in self.codes if c == THROTTLED)

    def by_minute(self) -> tuple[Minute, ...]:
        """The reading's minutes; one minute (the whole window, at ``since``) when it has none."""
        return self.minutes or (Minute(self.since, self.codes, self.p95_ms),)

    def counts(self, failure_codes: Iterable[str] = DEFAULT_FAILURE_CODES) -> Counts:
        """The histogram counted by ``failure_codes``: each request in the first class it matches."""
        classes = tuple(failure_codes)
        requests, throttled, by_class = classify(self.codes, classes)
        served = requests - throttled
        failures = sum(by_class.values())
        return Counts(
            self.deployment,
            requests,
            throttled,
            served,
            failures,
            by_class,
            failures / served if served else None,
            throttled / requests if requests else None,
            self.p95_ms if requests else None,
            self.codes,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Counts:
    """A reading counted: ``served`` = requests not throttled; ``failure_rate`` = failures / served;
    ``throttle_rate`` = throttled / requests; ``codes`` the raw histogram it was counted from."""

    deployment: str
    requests: int
    throttled: int
    served: int
    failures: int
    by_class: dict[str, int] = field(default_factory=dict)
    failure_rate: float | None = None
    throttle_rate: float | None = None
    p95_ms: float | None = None
    codes: tuple[Code, ...] = ()

    def text(self) -> str:
        classes = ", ".join(f"{n} {c}" for c, n in self.by_class.items() if n)
        rate = f" ({self.failure_rate:.2%})" if self.failure_rate is not None else ""
        return f"{self.failures} failure(s){f' [{classes}]' if classes else ''} of {self.served} request(s){rate}"
