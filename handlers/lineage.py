"""What a promoted candidate carries into the registry when its environment is upstream (dev) of it
(``models.<m>.environment``, role ``upstream``; docs/environments.md): its lineage, as the tags of the
registry version. Pure: read from the deploy decision's record and the promotion's id.

The tags: ``retrain_decision`` (the deploy decision), ``retrain_promotion`` (the promote record),
``retrain_run`` (the run the candidate came from, when it came from one), and the gate's figures of
the candidate under each metric's own name (and its slices'), so that a downstream (prod) service
judges the version as a champion by the same names its gate reads."""

from __future__ import annotations

from typing import Any

from handlers.records import DecisionRecord


def share_target(deploy: DecisionRecord | None) -> str | None:
    """The registry the deploy decision's plan shares its promoted candidate into (None: none)."""
    if deploy is None:
        return None
    target = (deploy.details.get("rendered") or {}).get("share_to")
    return str(target) if target else None


def _figure(value: Any) -> str | None:
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else None


def lineage(deploy: DecisionRecord, promotion: str) -> dict[str, str]:
    """The lineage tags of the candidate ``deploy`` rolled out, promoted by the record ``promotion``."""
    tags = {"retrain_decision": deploy.id, "retrain_promotion": promotion}
    candidate = (deploy.details.get("rendered") or {}).get("candidate") or {}
    if candidate.get("run_id"):
        tags["retrain_run"] = str(candidate["run_id"])
    gate = deploy.details.get("gate") or {}
    for metric in gate.get("metrics") or []:
        figure = _figure(metric.get("candidate"))
        if figure is not None:
            tags[str(metric["metric"])] = figure
        for part in metric.get("slices") or []:
            figure = _figure(part.get("candidate"))
            if figure is not None:
                tags[str(part["name"])] = figure
    return tags
