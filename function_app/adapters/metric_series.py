"""The platform metrics' series read into histograms, for the ``metrics`` health source
(:mod:`function_app.adapters.monitor_metrics`): ``RequestsPerMinute`` split by deployment, status and
model status into each deployment's requests per minute and code, ``RequestLatency_P95`` into its p95s."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from handlers.keys import finite
from handlers.records import iso

Histogram = dict[tuple[int, int | None], int]


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _dims(series: Any) -> dict[str, Any]:
    """A series' dimension values by lower-cased name (the API may answer 'statuscode' for 'statusCode')."""
    return {str(k).lower(): v for k, v in (series.metadata_values or {}).items()}


def histogram(
    series_list: list[Any],
) -> tuple[dict[str, Histogram], dict[str, dict[str, Histogram]], dict[tuple[str, datetime], float]]:
    """RequestsPerMinute series (``Average`` per minute, one series per combination of the split
    dimensions: a minute's average is that minute's requests) -> per deployment (lower case) the
    requests by (statusCode, modelStatusCode), the sum of the minutes; the same per minute (ISO
    start); and the requests of each deployment's minutes. A status that is not a number is 0
    (unknown); a model status that is not one is None (the model did not answer)."""
    sums: dict[str, dict[tuple[int, int | None], float]] = {}
    minutes: dict[str, dict[str, dict[tuple[int, int | None], float]]] = {}
    per_minute: dict[tuple[str, datetime], float] = {}
    for series in series_list:
        dims = _dims(series)
        deployment = str(dims.get("deployment") or "").lower()
        key = (_int(dims.get("statuscode")) or 0, _int(dims.get("modelstatuscode")))
        for point in series.data or []:
            requests = finite(point.average) or 0.0
            if not requests:
                continue
            bucket = sums.setdefault(deployment, {})
            bucket[key] = bucket.get(key, 0.0) + requests
            of_minute = minutes.setdefault(deployment, {}).setdefault(iso(point.timestamp), {})
            of_minute[key] = of_minute.get(key, 0.0) + requests
            minute = (deployment, point.timestamp)
            per_minute[minute] = per_minute.get(minute, 0.0) + requests
    codes = {d: {k: round(v) for k, v in bucket.items()} for d, bucket in sums.items()}
    by_minute = {d: {at: {k: round(v) for k, v in h.items()} for at, h in ms.items()} for d, ms in minutes.items()}
    return codes, by_minute, per_minute


def summed(histograms: Any) -> Histogram:
    """Histograms added up."""
    out: Histogram = {}
    for histogram in histograms:
        for key, n in histogram.items():
            out[key] = out.get(key, 0) + n
    return out


def p95s(
    series_list: list[Any], per_minute: dict[tuple[str, datetime], float]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """RequestLatency_P95 series -> per deployment the mean of its minutes' p95, weighted by their
    requests (a plain mean when no minute has a count), and each minute's p95 (ISO start)."""
    sums: dict[str, list[float]] = {}  # deployment -> [sum of w * p95, sum of w, sum of p95, minutes]
    minutes: dict[str, dict[str, float]] = {}
    for series in series_list:
        deployment = str(_dims(series).get("deployment") or "").lower()
        for point in series.data or []:
            value = finite(point.average)
            if value is None:
                continue
            minutes.setdefault(deployment, {})[iso(point.timestamp)] = value
            w = per_minute.get((deployment, point.timestamp), 0.0)
            acc = sums.setdefault(deployment, [0.0, 0.0, 0.0, 0.0])
            acc[0] += w * value
            acc[1] += w
            acc[2] += value
            acc[3] += 1
    return {d: (a[0] / a[1] if a[1] > 0 else a[2] / a[3]) for d, a in sums.items()}, minutes
