"""The Deployments port (:class:`handlers.workspace_ports.Deployments`) for **batch** endpoints
(``deploy.batch_endpoint``): a candidate batch deployment beside the endpoint's default one, and the
switch of the endpoint's ``defaults.deployment_name``.

A batch endpoint has no traffic split: its default deployment is the one that "will end up getting
100% traffic when the endpoint scoring URL is invoked" (REST reference, BatchEndpointDefaults). So the
port's traffic is ``{default: 100}``: reading it reads the default, and setting ``{candidate: 100}``
switches the default (one endpoint update, not waited for). Mirror traffic does not exist here (a
PermanentError), and no model monitor targets a batch deployment. Long-running operations are
started and not waited for, as for online deployments; the reconciler follows the rollout.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from function_app.adapters.azureml.adoption import adopted, found_adopted, refuse_foreign
from function_app.adapters.azureml.candidates import AzureMLCandidates, _Champion
from function_app.adapters.azureml.client import BACKEND, BUSY, AzureMLClient
from function_app.retry import Budget
from handlers.errors import PermanentError
from handlers.plans import DeployPlan
from handlers.rollout.traffic import live as live_split
from handlers.workspace_ports import ActionResult, CandidateFacts, DeploymentInfo

log = logging.getLogger(__name__)


def _state(found: Any) -> str:
    raw = getattr(found, "provisioning_state", None)
    return str(getattr(raw, "value", raw) or "Unknown")


def _default_of(endpoint: Any) -> str | None:
    defaults = getattr(endpoint, "defaults", None)
    name = getattr(defaults, "deployment_name", None) if defaults is not None else None
    return str(name) if name else None


class AzureMLBatch:
    """Candidate batch deployments, a batch endpoint's default deployment, retiring batch deployments."""

    def __init__(self, client: AzureMLClient, candidates: AzureMLCandidates) -> None:
        self.client = client
        self.candidates = candidates
        self.name = BACKEND

    # ------------------------------------------------------------------ the gate's facts, the candidate

    def candidate_facts(self, plan: DeployPlan) -> CandidateFacts:
        """The candidate, and the champion: the model version the endpoint's default deployment serves."""
        budget = self.client.retry.budget()
        default = _default_of(self._endpoint(budget, plan.endpoint, plan.model))
        if default is None:
            return self.candidates.facts_of(budget, plan, _Champion(None, None, None))
        live = self._deployment(budget, plan.endpoint, default)
        return self.candidates.facts_of(
            budget, plan, self.candidates.champion_in(budget, plan, f"{plan.endpoint}/{default}", live)
        )

    def start_deploy(self, plan: DeployPlan, facts: CandidateFacts) -> ActionResult:
        """Register the candidate if it has no version yet, then start its batch deployment beside the
        default one, copying the default's settings (compute, code, environment, batch sizes) with the
        candidate model. Not waited for. A deployment of the name is adopted only when it carries this
        decision's (:func:`function_app.adapters.azureml.deployments.refuse_foreign`)."""
        budget = self.client.retry.budget()
        if facts.live_deployment is None:
            raise PermanentError(
                f"batch endpoint {plan.endpoint!r} has no default deployment to copy the settings from; "
                "create one and make it the endpoint's default"
            )
        default = facts.live_deployment.partition("/")[2]
        job = self._job(plan)
        # Looked for before anything is registered: a deployment of the name that is not this decision's
        # (its tags, its model, its creator) fails it with nothing changed.
        found = self._deployment(budget, plan.endpoint, plan.deployment, or_none=True)
        model = facts.candidate_version
        if found is not None:
            refuse_foreign(self.client, plan, found, model, "batch deployment", "the default is not switched")
            assert model is not None  # checked: it serves this decision's candidate
        details: dict[str, Any] = {"backend": BACKEND, "batch": True}
        if model is None:
            model = self.candidates.register(budget, plan, facts)
            details["registered"] = model.label
        details.update(
            {
                "candidate": model.label + (f" (run {plan.run_id})" if plan.run_id else ""),
                "copied_from": facts.live_deployment,
            }
        )
        if found is not None:
            return adopted(plan, job, details, "batch deployment")
        template = self._deployment(budget, plan.endpoint, default)
        deployment = copy.deepcopy(template)
        deployment.name = plan.deployment
        deployment.endpoint_name = plan.endpoint
        deployment.model = model.id
        deployment.tags = {**dict(getattr(template, "tags", None) or {}), **plan.tags}
        deployment.description = f"candidate {model.label} of {plan.model}, deployed by the retrain service"
        self.client.call(
            budget,
            f"creating batch deployment {plan.endpoint}/{plan.deployment}",
            lambda: self.client.ml.batch_deployments.begin_create_or_update(
                copy.deepcopy(deployment), skip_script_validation=True
            ),
            f"check models.{plan.model}.deploy.batch_endpoint and the default deployment {facts.live_deployment}",
            retry_on=BUSY,
        )  # the poller is not waited for: the reconciler follows the rollout
        log.info("started batch deployment %s model=%s", job["name"], model.label)
        return ActionResult("submitted", job=job, details=details)

    # ------------------------------------------------------------------ state and the default

    def deployment_state(self, endpoint: str, deployment: str) -> str | None:
        found = self._deployment(self.client.retry.budget(), endpoint, deployment, or_none=True)
        return None if found is None else _state(found)

    def endpoint_traffic(self, endpoint: str) -> dict[str, int]:
        """``{default: 100}`` (``{}`` without a default deployment)."""
        default = _default_of(self._endpoint(self.client.retry.budget(), endpoint))
        return {default: 100} if default else {}

    def set_traffic(self, endpoint: str, traffic: dict[str, int] | None, mirror: dict[str, int] | None = None) -> bool:
        """Switch the endpoint's default deployment to the one ``traffic`` gives 100% (None: as it is).
        False when it is the default already (nothing is sent). A split, or any mirror traffic, is
        something a batch endpoint cannot do: a PermanentError before any request."""
        if mirror:
            raise PermanentError(f"batch endpoint {endpoint}: mirror traffic {mirror}: a batch endpoint has none")
        if traffic is None:
            return False
        wanted = live_split(traffic)
        if len(wanted) != 1 or next(iter(wanted.values())) != 100:
            raise PermanentError(
                f"batch endpoint {endpoint}: traffic {wanted}: a batch endpoint has one default deployment, which "
                "gets every job; it cannot split them"
            )
        [target] = wanted
        budget = self.client.retry.budget()
        current = self._endpoint(budget, endpoint)
        if _default_of(current) == target:
            return False
        current.defaults.deployment_name = target
        self.client.call(  # a 409 (another operation on the endpoint in progress) is retried, then transient
            budget,
            f"switching the default deployment of batch endpoint {endpoint} to {target}",
            lambda: self.client.ml.batch_endpoints.begin_create_or_update(current),
            "check that the deployment exists on the batch endpoint and is provisioned",
            retry_on=BUSY,
        )
        log.info("switched default batch_endpoint=%s deployment=%s", endpoint, target)
        return True

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        """The endpoint's batch deployments: the default with 100%, the others idle."""
        budget = self.client.retry.budget()
        default = _default_of(self._endpoint(budget, endpoint))
        found = self.client.call(
            budget,
            f"deployments of batch endpoint {endpoint}",
            lambda: list(self.client.ml.batch_deployments.list(endpoint_name=endpoint)),
        )
        return [DeploymentInfo(str(d.name), 100 if str(d.name) == default else 0, 0, _state(d)) for d in found]

    def delete_deployment(self, endpoint: str, deployment: str) -> bool:
        """``batch_deployments.begin_delete``, not waited for; False when there is none."""
        started = self.client.call(
            self.client.retry.budget(),
            f"deleting batch deployment {endpoint}/{deployment}",
            lambda: self.client.ml.batch_deployments.begin_delete(name=deployment, endpoint_name=endpoint),
            "check that it is not the endpoint's default deployment",
            retry_on=BUSY,
            or_none=True,
        )
        if started is None:
            return False
        log.info("deleting batch deployment endpoint=%s deployment=%s", endpoint, deployment)
        return True

    def monitors_targeting(self, endpoint: str, deployment: str) -> list[str]:
        """None: v2 model monitors target online deployments only."""
        return []

    def retarget_monitor(self, schedule: str, endpoint: str, deployment: str) -> bool:
        return False

    def share_promoted(
        self, endpoint: str, deployment: str, registry: str, lineage: Mapping[str, str]
    ) -> dict[str, Any]:
        """Not for batch endpoints yet: a PermanentError, which the promotion records for an operator."""
        raise PermanentError(
            f"batch deployment {endpoint}/{deployment}: sharing a batch model into registry {registry} is not "
            "supported yet"
        )

    def find_deploy(self, plan: DeployPlan) -> ActionResult | None:
        """The batch deployment ``plan.deployment`` adopted, as :meth:`start_deploy` adopts it, when it exists and is
        provably this decision's; None when there is none; a PermanentError naming who created one that is not.
        Reads only: what a deploy resumed after its worker died asks first."""
        found = self._deployment(self.client.retry.budget(), plan.endpoint, plan.deployment, or_none=True)
        if found is None:
            return None
        facts = self.candidate_facts(plan)
        details = {"backend": BACKEND, "batch": True}
        unchanged = "the default is not switched"
        return found_adopted(self.client, plan, found, facts, self._job(plan), details, "batch deployment", unchanged)

    def _job(self, plan: DeployPlan) -> dict[str, Any]:
        return {
            "name": f"{plan.endpoint}/{plan.deployment}",
            "url": self.client.workspace.studio(f"endpoints/batch/{quote(plan.endpoint)}/detail"),
        }

    # ------------------------------------------------------------------ reads

    def _endpoint(self, budget: Budget, endpoint: str, model: str = "<model>") -> Any:
        return self.client.call(
            budget,
            f"batch endpoint {endpoint!r}",
            lambda: self.client.ml.batch_endpoints.get(endpoint),
            f"create it or fix models.{model}.deploy.batch_endpoint.name",
        )

    def _deployment(self, budget: Budget, endpoint: str, name: str, *, or_none: bool = False) -> Any:
        return self.client.call(
            budget,
            f"batch deployment {endpoint}/{name}",
            lambda: self.client.ml.batch_deployments.get(name, endpoint_name=endpoint),
            or_none=or_none,
        )
