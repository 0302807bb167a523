"""The Deployments port the service is given when the policy names batch endpoints: each call goes,
by its endpoint, to the backend's batch port or to its online one. It decides nothing and changes
nothing of its own: a pass-through that the executor acts through (tests/test_layout.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers.plans import DeployPlan
from handlers.workspace_ports import ActionResult, CandidateFacts, DeploymentInfo, Deployments


class ByEndpoint:
    """The Deployments port: the endpoints in ``batch_endpoints`` are reached through ``batch`` (the
    backend's batch port), every other through ``online``."""

    def __init__(self, online: Deployments, batch: Deployments, batch_endpoints: frozenset[str]) -> None:
        self.online, self.batch, self.batch_endpoints = online, batch, batch_endpoints
        self.name = online.name

    def _on(self, endpoint: str) -> Deployments:
        return self.batch if endpoint in self.batch_endpoints else self.online

    def candidate_facts(self, plan: DeployPlan) -> CandidateFacts:
        return self._on(plan.endpoint).candidate_facts(plan)

    def start_deploy(self, plan: DeployPlan, facts: CandidateFacts) -> ActionResult:
        return self._on(plan.endpoint).start_deploy(plan, facts)

    def find_deploy(self, plan: DeployPlan) -> ActionResult | None:
        return self._on(plan.endpoint).find_deploy(plan)

    def deployment_state(self, endpoint: str, deployment: str) -> str | None:
        return self._on(endpoint).deployment_state(endpoint, deployment)

    def endpoint_traffic(self, endpoint: str) -> dict[str, int]:
        return self._on(endpoint).endpoint_traffic(endpoint)

    def set_traffic(self, endpoint: str, traffic: dict[str, int] | None, mirror: dict[str, int] | None = None) -> bool:
        return self._on(endpoint).set_traffic(endpoint, traffic, mirror)

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        return self._on(endpoint).list_deployments(endpoint)

    def delete_deployment(self, endpoint: str, deployment: str) -> bool:
        return self._on(endpoint).delete_deployment(endpoint, deployment)

    def monitors_targeting(self, endpoint: str, deployment: str) -> list[str]:
        return self._on(endpoint).monitors_targeting(endpoint, deployment)

    def retarget_monitor(self, schedule: str, endpoint: str, deployment: str) -> bool:
        return self._on(endpoint).retarget_monitor(schedule, endpoint, deployment)

    def share_promoted(
        self, endpoint: str, deployment: str, registry: str, lineage: Mapping[str, str]
    ) -> dict[str, Any]:
        return self._on(endpoint).share_promoted(endpoint, deployment, registry, lineage)


def routed(deployments: Deployments, batch_endpoints: frozenset[str]) -> Deployments:
    """``deployments`` as the service uses it: with the backend's batch port (its ``batch``, when it
    has one; a dry run renders both alike) for the batch endpoints, when the policy names any."""
    if not batch_endpoints:
        return deployments
    return ByEndpoint(deployments, getattr(deployments, "batch", deployments), batch_endpoints)
