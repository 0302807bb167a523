"""Model monitors follow a promotion (part of the Deployments port, :class:`handlers.workspace_ports.Deployments`):
the model-monitor schedules that target a deployment, and pointing one at another deployment.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

from function_app.adapters.azureml.client import BUSY, DATA_ID, SHORT_ASSET, AzureMLClient
from handlers.errors import PermanentError

log = logging.getLogger(__name__)

_DEPLOYMENT_ID = re.compile(r"onlineEndpoints/(?P<endpoint>[^/]+)/deployments/(?P<deployment>[^/?]+)$", re.IGNORECASE)
_SHORT_DEPLOYMENT = re.compile(r"^azureml:(?P<endpoint>[^:/]+):(?P<deployment>[^:/]+)$")


def _monitor_target(schedule: Any) -> tuple[str, str] | None:
    """(endpoint, deployment) a model-monitor schedule watches, lower-cased; None for other schedules."""
    action = (schedule.get("properties") or {}).get("action") or {}
    if str(action.get("actionType") or "").lower() != "createmonitor":
        return None
    target = ((action.get("monitorDefinition") or {}).get("monitoringTarget") or {}).get("deploymentId")
    match = _DEPLOYMENT_ID.search(str(target or "")) or _SHORT_DEPLOYMENT.match(str(target or ""))
    return (match["endpoint"].lower(), match["deployment"].lower()) if match else None


def _retargeted_id(old: str, endpoint: str, deployment: str) -> str:
    """``old`` (an ARM id or ``azureml:endpoint:deployment``) naming ``endpoint/deployment`` instead."""
    if _SHORT_DEPLOYMENT.match(old):
        return f"azureml:{endpoint}:{deployment}"
    match = _DEPLOYMENT_ID.search(old)
    if match is None:
        raise PermanentError(f"monitoring target {old!r} does not name an online deployment")
    return f"{old[: match.start()]}onlineEndpoints/{endpoint}/deployments/{deployment}"


def _asset(ref: Any) -> tuple[str, str] | None:
    """(name, version) of a data asset reference (an ARM id or ``azureml:name:version``), lower-cased."""
    match = DATA_ID.search(str(ref or "")) or SHORT_ASSET.match(str(ref or ""))
    return (match["name"].lower(), match["version"].lower()) if match else None


def _collected(deployment: Any) -> dict[str, tuple[str, str]]:
    """The data asset each data collection of a deployment (REST shape) collects into, by collection."""
    collector = getattr(getattr(deployment, "properties", None), "data_collector", None)
    out = {}
    for name, collection in (getattr(collector, "collections", None) or {}).items():
        ref = getattr(collection, "data_id", None)
        if ref is None and isinstance(collection, Mapping):  # the REST model's nested values read as mappings
            ref = collection.get("dataId")
        asset = _asset(ref)
        if asset is not None:
            out[str(name)] = asset
    return out


def _production_inputs(definition: Mapping[str, Any]) -> list[MutableMapping[str, Any]]:
    """Each signal's production data input (one, or a list for some signal types), REST shape."""
    found: list[MutableMapping[str, Any]] = []
    for signal in (definition.get("signals") or {}).values():
        data = (signal or {}).get("productionData")
        found.extend(d for d in (data if isinstance(data, list) else [data]) if isinstance(d, MutableMapping))
    return found


def _moved_uri(uri: str, new: tuple[str, str]) -> str:
    """``uri`` (a data asset reference :func:`_asset` read) naming the asset ``new``, in the form it had."""
    match = DATA_ID.search(uri)
    if match is None:  # azureml:name:version
        return f"azureml:{new[0]}:{new[1]}"
    return f"{uri[: match.start()]}/data/{new[0]}/versions/{new[1]}"


class AzureMLMonitors:
    """Reading and retargeting model-monitor schedules, through the REST client the SDK's ``schedules`` use."""

    def __init__(self, client: AzureMLClient) -> None:
        self.client = client

    def monitors_targeting(self, endpoint: str, deployment: str) -> list[str]:
        """The model-monitor schedules (``CreateMonitor`` schedules, enabled or not) whose monitoring
        target (``MonitoringTarget(endpoint_deployment_id=...)``) is ``endpoint/deployment``."""
        ops, rg, ws = (
            self.client.ml.schedules.service_client,
            self.client.workspace.resource_group,
            self.client.workspace.name,
        )
        found = self.client.call(
            self.client.retry.budget(),
            "model-monitor schedules",
            lambda: list(ops.list(rg, ws, list_view_type="All")),
        )
        wanted = (endpoint.lower(), deployment.lower())
        return sorted(str(s["name"]) for s in found if _monitor_target(s) == wanted)

    def retarget_monitor(self, schedule: str, endpoint: str, deployment: str) -> bool:
        """Read the schedule and PUT it back with only its monitoring target's deployment id changed
        (in the form it had). Through the REST client the SDK's ``schedules`` use, so the signals,
        compute and trigger go back exactly as Azure ML stored them (the entity round trip would
        re-resolve every signal's data). A 409 (operation in progress) is retried."""
        ops, rg, ws = (
            self.client.ml.schedules.service_client,
            self.client.workspace.resource_group,
            self.client.workspace.name,
        )
        budget = self.client.retry.budget()
        found = self.client.call(budget, f"model-monitor schedule {schedule}", lambda: ops.get(rg, ws, schedule))
        definition = found["properties"]["action"]["monitorDefinition"]
        target = definition["monitoringTarget"]
        old = str(target.get("deploymentId") or "")
        new = _retargeted_id(old, endpoint, deployment)
        if old == new:
            return False
        target["deploymentId"] = new
        self._follow_collections(budget, definition, old, endpoint, deployment)
        what = f"pointing model-monitor schedule {schedule} at {endpoint}/{deployment}"
        self.client.call(  # a 409 (an operation on the schedule in progress) is retried, then transient
            budget,
            what,
            lambda: ops.begin_create_or_update(rg, ws, schedule, found, polling=False),
            "check the schedule in the studio's Monitoring page",
            retry_on=BUSY,
        )
        log.info("model monitor %s now targets %s/%s (was %s)", schedule, endpoint, deployment, old)
        return True

    def _follow_collections(
        self, budget: Any, definition: dict[str, Any], old: str, endpoint: str, deployment: str
    ) -> None:
        """A production data input that reads what the old deployment's data collector collected is
        pointed at what the new one's collects instead, collection by collection, when they differ: a
        candidate that shadowed the live one first (``deploy.rollout.mirror``) collects into data
        assets of its own (docs/rollouts.md, "Shadow stage"). Inputs that name other data, and
        deployments that collect into the same assets, are left as they are."""
        inputs = _production_inputs(definition)
        match = _DEPLOYMENT_ID.search(old) or _SHORT_DEPLOYMENT.match(old)
        if not inputs or match is None:
            return
        if not self.client.reads_deployment_bodies:  # another SDK than the pinned one: the inputs are left as they are
            return

        def collections(e: str, d: str) -> dict[str, tuple[str, str]]:
            found = self.client.deployment_body(budget, f"deployment {e}/{d}", e, d, or_none=True)
            return {} if found is None else _collected(found)

        before, after = collections(match["endpoint"], match["deployment"]), collections(endpoint, deployment)
        moved = {before[c]: after[c] for c in before if c in after and before[c] != after[c]}
        for data in inputs:
            asset = _asset(data.get("uri"))
            if asset in moved:
                data["uri"] = _moved_uri(str(data["uri"]), moved[asset])
                log.info("model monitor input %s now reads %s:%s", asset, *moved[asset])
