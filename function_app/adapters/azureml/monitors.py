"""Model monitors follow a promotion (part of the Deployments port, :class:`handlers.ports.Deployments`):
the model-monitor schedules that target a deployment, and pointing one at another deployment.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from function_app.adapters.azureml.client import BUSY, AzureMLClient
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
        target = found["properties"]["action"]["monitorDefinition"]["monitoringTarget"]
        old = str(target.get("deploymentId") or "")
        new = _retargeted_id(old, endpoint, deployment)
        if old == new:
            return False
        target["deploymentId"] = new
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
