"""The Deployments port (:class:`handlers.workspace_ports.Deployments`) on Azure ML: candidate deployments,
traffic and retirement.

A new managed online deployment is started beside the live one, copying its settings (its data
collector, its ``modelMountPath``), with the candidate model and no traffic. A deployment of the
candidate's name is adopted only when it is this decision's. Long-running operations are started and
not waited for: the SDK's poller follows them on a daemon thread, the reconciler follows the rollout.
"""

from __future__ import annotations

import copy
import logging
from functools import partial
from typing import Any
from urllib.parse import quote

from function_app.adapters.azureml.adoption import adopted, found_adopted, refuse_foreign
from function_app.adapters.azureml.candidates import AzureMLCandidates
from function_app.adapters.azureml.client import BACKEND, BUSY, DATA_ID, SHORT_ASSET, AzureMLClient
from function_app.retry import Budget
from handlers.errors import PermanentError, TransientError
from handlers.plans import DeployPlan
from handlers.rollout.traffic import live as live_split
from handlers.rollout.traffic import mirror_refusal
from handlers.workspace_ports import ActionResult, CandidateFacts, DeploymentInfo, ModelVersion

log = logging.getLogger(__name__)

MAX_DEPLOYMENTS = 20  # per online endpoint (Azure ML docs, "Manage and increase quotas")


def _traffic(endpoint: Any) -> dict[str, int]:
    """An endpoint's split, deployments at 0% left out."""
    return live_split(getattr(endpoint, "traffic", None) or {})


def _mirrored(endpoint: Any) -> dict[str, int]:
    """An endpoint's mirror traffic, deployments at 0% left out."""
    return live_split(getattr(endpoint, "mirror_traffic", None) or {})


class AzureMLDeployments:
    """Starting candidate deployments, reading and setting an endpoint's traffic, retiring deployments."""

    def __init__(self, client: AzureMLClient, candidates: AzureMLCandidates) -> None:
        self.client = client
        self.candidates = candidates  # a candidate without a version is registered before it is deployed

    def start_deploy(self, plan: DeployPlan, facts: CandidateFacts) -> ActionResult:
        """Register the candidate if it has no version yet, then start its deployment at 0% beside the
        live one, copying the live one's settings. The poller is not waited for."""
        budget = self.client.retry.budget()
        if facts.live_deployment is None:
            raise PermanentError(f"endpoint {plan.endpoint!r} has no live deployment to copy the settings from")
        live_name = facts.live_deployment.partition("/")[2]
        live, mount_path = self._live_deployment(budget, plan.endpoint, live_name)
        details: dict[str, Any] = {"backend": BACKEND}
        job = self._job(plan)
        # Looked for before anything is registered: a deployment of the name that is not this
        # decision's fails it with nothing changed.
        found = self._find_deployment_rest(budget, plan)
        model = facts.candidate_version
        if found is not None:
            refuse_foreign(self.client, plan, found, model)
            assert model is not None  # checked: it serves this decision's candidate
        if model is None:
            model = self.candidates.register(budget, plan, facts)
            details["registered"] = model.label
        details.update(
            {
                "candidate": model.label + (f" (run {plan.run_id})" if plan.run_id else ""),
                "copied_from": facts.live_deployment,
                "traffic": 0,
            }
        )
        if found is not None:
            return adopted(plan, job, details)
        collector = self._collector(budget, plan, live)
        if plan.shadows and collector is not None:  # said in the deploy decision: not the live one's assets
            details["collects_into"] = sorted(f"{plan.endpoint}-{plan.deployment}-{n}" for n in collector.collections)
        deployment = self._deployment(plan, live, model, collector, mount_path)
        what = f"creating deployment {plan.endpoint}/{plan.deployment}"
        # The SDK rewrites the entity it is given (each collection's data becomes an id string), so that
        # each attempt gets a fresh copy: a retried creation would otherwise fail inside the SDK.
        try:  # a 409 (an operation on the endpoint in progress) is retried, then transient
            self.client.call(
                budget,
                what,
                lambda: self.client.ml.online_deployments.begin_create_or_update(
                    copy.deepcopy(deployment), skip_script_validation=True
                ),
                f"check models.{plan.model}.deploy and the live deployment {facts.live_deployment}",
                retry_on=BUSY,
            )  # the poller is not waited for: the reconciler follows the rollout
        except PermanentError as error:
            full = self._endpoint_full(budget, plan.endpoint)
            if full:
                raise PermanentError(f"{what}: {full}") from error
            raise
        log.info("started deployment %s model=%s traffic=0", job["name"], model.label)
        return ActionResult("submitted", job=job, details=details)

    def find_deploy(self, plan: DeployPlan) -> ActionResult | None:
        """The deployment ``plan.deployment`` adopted, as :meth:`start_deploy` adopts it, when it exists and is
        provably this decision's (:func:`refuse_foreign`, against the candidate version this decision registered,
        read as the gate's facts read it); None when the endpoint has no such deployment; a PermanentError naming
        who created one that is not. Reads only: what a deploy resumed after its worker died asks first."""
        found = self._find_deployment_rest(self.client.retry.budget(), plan)
        if found is None:
            return None
        facts = self.candidates.candidate_facts(plan)
        return found_adopted(self.client, plan, found, facts, self._job(plan), {"backend": BACKEND, "traffic": 0})

    def _job(self, plan: DeployPlan) -> dict[str, Any]:
        return {
            "name": f"{plan.endpoint}/{plan.deployment}",
            "url": self.client.workspace.studio(f"endpoints/realtime/{quote(plan.endpoint)}/detail"),
        }

    def deployment_state(self, endpoint: str, deployment: str) -> str | None:
        """The deployment's provisioning state (``online_deployments.get``); None when it does not exist."""
        found = self.client.call(
            self.client.retry.budget(),
            f"deployment {endpoint}/{deployment}",
            lambda: self.client.ml.online_deployments.get(deployment, endpoint_name=endpoint),
            or_none=True,
        )
        if found is None:
            return None
        raw = getattr(found, "provisioning_state", None)
        return str(getattr(raw, "value", raw) or "Unknown")

    def endpoint_traffic(self, endpoint: str) -> dict[str, int]:
        return _traffic(self._endpoint(self.client.retry.budget(), endpoint))

    def set_traffic(self, endpoint: str, traffic: dict[str, int] | None, mirror: dict[str, int] | None = None) -> bool:
        """Read the endpoint; if its split or its mirror traffic differs from ``traffic`` (None: the
        split it has) and ``mirror`` (None: the mirror it has), PUT it with both in one update
        (``begin_create_or_update``, whose poller is not waited for). The SDK leaves out deployments
        at 0%, as does Azure ML. What Azure ML refuses is not asked for (:func:`mirror_refusal`): a
        kept mirror of a deployment that gets live traffic is dropped from the mirror, and anything
        else Azure would refuse is a PermanentError before any request."""
        budget = self.client.retry.budget()
        current = self._endpoint(budget, endpoint)
        now_live, now_mirror = _traffic(current), _mirrored(current)
        wanted = now_live if traffic is None else live_split(traffic)
        if mirror is not None:
            wanted_mirror = live_split(mirror)
        else:  # the mirror as it is, less a deployment that goes live (Azure ML: never both at once)
            wanted_mirror = {d: p for d, p in now_mirror.items() if d not in wanted}
        if now_live == wanted and now_mirror == wanted_mirror:
            return False
        refused = mirror_refusal(wanted, wanted_mirror)
        if refused is not None:
            raise PermanentError(
                f"endpoint {endpoint}: traffic {wanted} with mirror traffic {wanted_mirror}: {refused}"
            )
        current.traffic = dict(wanted)
        current.mirror_traffic = dict(wanted_mirror)
        what = f"setting the traffic of endpoint {endpoint} to {wanted}" + (
            f", mirror traffic {wanted_mirror}" if wanted_mirror or now_mirror else ""
        )
        tries = [0]

        def put() -> Any:
            """The update; a retry (after a 409's wait) reads the endpoint again first and sends nothing when
            another writer set its traffic meanwhile (an operator's rollback, a later step of another pass):
            this split, decided on what the endpoint had, would undo it. Left for the next pass to decide."""
            tries[0] += 1
            if tries[0] > 1:
                now = self.client.ml.online_endpoints.get(endpoint)
                if (_traffic(now), _mirrored(now)) not in ((now_live, now_mirror), (wanted, wanted_mirror)):
                    raise TransientError(
                        f"endpoint {endpoint}: its traffic changed to {_traffic(now)} while this update to {wanted} "
                        f"waited (it was {now_live}); not sent, left for the next reconciler pass"
                    )
            return self.client.ml.online_endpoints.begin_create_or_update(current)

        self.client.call(  # a 409 (another operation on the endpoint in progress) is retried, then transient
            budget,
            what,
            put,
            "check that every deployment named exists on the endpoint and is provisioned",
            retry_on=BUSY,
        )  # the poller is not waited for: the next reconciler pass reads the endpoint again
        log.info("set traffic endpoint=%s traffic=%s mirror=%s", endpoint, wanted, wanted_mirror)
        return True

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        """The endpoint's deployments (``online_deployments.list``) with the endpoint's traffic and
        mirror traffic (``online_endpoints.get``)."""
        budget = self.client.retry.budget()
        current = self._endpoint(budget, endpoint)
        traffic = {str(k): int(v) for k, v in (getattr(current, "traffic", None) or {}).items()}
        mirror = {str(k): int(v) for k, v in (getattr(current, "mirror_traffic", None) or {}).items()}
        found = self.client.call(
            budget,
            f"deployments of endpoint {endpoint}",
            lambda: list(self.client.ml.online_deployments.list(endpoint_name=endpoint)),
        )
        out = []
        for d in found:
            raw = getattr(d, "provisioning_state", None)
            state = str(getattr(raw, "value", raw) or "Unknown")
            out.append(DeploymentInfo(str(d.name), traffic.get(str(d.name), 0), mirror.get(str(d.name), 0), state))
        return out

    def delete_deployment(self, endpoint: str, deployment: str) -> bool:
        """``online_deployments.begin_delete``, not waited for. A 409 (another operation on the
        endpoint in progress) is retried like a transient failure."""
        budget = self.client.retry.budget()
        what = f"deleting deployment {endpoint}/{deployment}"
        started = self.client.call(
            budget,
            what,
            lambda: self.client.ml.online_deployments.begin_delete(name=deployment, endpoint_name=endpoint),
            "check that it has no traffic or mirror traffic",
            retry_on=BUSY,
            or_none=True,
        )
        if started is None:  # no such deployment (a 404): nothing to delete
            return False
        log.info("deleting deployment endpoint=%s deployment=%s", endpoint, deployment)
        return True

    def _endpoint(self, budget: Budget, endpoint: str) -> Any:
        return self.client.call(
            budget,
            f"online endpoint {endpoint!r}",
            lambda: self.client.ml.online_endpoints.get(endpoint),
            "create it or fix the model's deploy.endpoint in the policy",
        )

    def _live_deployment(self, budget: Budget, endpoint: str, name: str) -> tuple[Any, str | None]:
        """The live deployment as the SDK's entity, and its ``modelMountPath``. azure-ai-ml 1.35 drops
        ``modelMountPath`` when it converts a deployment it read (``ManagedOnlineDeployment._from_rest_object``),
        so the deployment is read through the REST client ``online_deployments.get`` itself uses, and
        converted here: one request, and the mount path from the REST body."""
        from azure.ai.ml.entities import OnlineDeployment

        if not self.client.reads_deployment_bodies:  # another SDK than the pinned one: its entity, if it keeps the path
            live = self.client.call(
                budget,
                f"live deployment {endpoint}/{name}",
                lambda: self.client.ml.online_deployments.get(name, endpoint_name=endpoint),
            )
            return live, getattr(live, "model_mount_path", None)
        raw = self.client.deployment_body(budget, f"live deployment {endpoint}/{name}", endpoint, name)
        mount_path = getattr(raw.properties, "model_mount_path", None)
        return OnlineDeployment._from_rest_object(raw), None if mount_path is None else str(mount_path)

    def _endpoint_full(self, budget: Budget, endpoint: str) -> str | None:
        """Why a refused creation was refused, when the endpoint holds as many deployments as Azure ML
        allows (:data:`MAX_DEPLOYMENTS`); None otherwise (Azure's wording for it is not documented, so
        the count decides, read after the refusal)."""
        try:
            found = self.client.call(
                budget,
                f"deployments of endpoint {endpoint}",
                lambda: list(self.client.ml.online_deployments.list(endpoint_name=endpoint)),
            )
        except (PermanentError, TransientError):
            return None  # the creation's own error says what it can
        if len(found) < MAX_DEPLOYMENTS:
            return None
        names = ", ".join(sorted(str(d.name) for d in found))
        return (
            f"endpoint {endpoint} already has {len(found)} deployments, the most Azure ML allows per endpoint "
            f'("Manage and increase quotas"); delete deployments it no longer needs (rolled-back or demoted '
            f"ones at 0% traffic: {names}) or ask for a higher limit with a quota request, then deploy again"
        )

    def _find_deployment_rest(self, budget: Budget, plan: DeployPlan) -> Any | None:
        """The deployment as the REST API answers it (the SDK's entity drops ``systemData``)."""
        if not self.client.reads_deployment_bodies:
            return self._find_deployment(budget, plan)
        what = f"deployment {plan.endpoint}/{plan.deployment}"
        return self.client.deployment_body(budget, what, plan.endpoint, plan.deployment, or_none=True)

    def _find_deployment(self, budget: Budget, plan: DeployPlan) -> Any | None:
        return self.client.call(
            budget,
            f"deployment {plan.endpoint}/{plan.deployment}",
            lambda: self.client.ml.online_deployments.get(plan.deployment, endpoint_name=plan.endpoint),
            or_none=True,
        )

    def _collector(self, budget: Budget, plan: DeployPlan, live: Any) -> Any | None:
        """The live deployment's data collector for the candidate, collecting into the same data assets
        (so a model monitor reading them keeps its production data). The SDK registers each
        collection's data asset when it creates a deployment, from a name, version and path: given
        those of the live deployment's assets, it finds them registered already.

        A candidate that shadows the live one first (``plan.shadows``, ``deploy.rollout.mirror``)
        would collect copies of the live requests, with its own answers, into the live deployment's
        assets: its collections name no asset instead, so the SDK registers its own
        (``<endpoint>-<deployment>-<collection>``, version 1, under
        ``modelDataCollector/<endpoint>/<deployment>/<collection>``,
        ``_register_collection_data_assets`` in azure-ai-ml)."""
        from azure.ai.ml.entities._deployment.data_asset import DataAsset

        collector = copy.deepcopy(getattr(live, "data_collector", None))
        if collector is None:
            return None
        if plan.shadows:
            for collection in (collector.collections or {}).values():
                collection.data = None
            log.info(
                "candidate %s/%s shadows %s: it collects into its own data assets",
                plan.endpoint,
                plan.deployment,
                live.name,
            )
            return collector
        for name, collection in (collector.collections or {}).items():
            ref = str(collection.data or "")
            match = DATA_ID.search(ref) or SHORT_ASSET.match(ref)
            if not match:
                collection.data = None  # the SDK registers <endpoint>-<deployment>-<name> for it
                continue
            asset_name, asset_version = match["name"], match["version"]
            asset = self.client.call(
                budget,
                f"data asset {asset_name}:{asset_version} of the {name} collection of {live.name}",
                partial(self.client.ml.data.get, asset_name, version=asset_version),
            )
            collection.data = DataAsset(name=asset.name, version=asset.version, path=asset.path)
        log.info("candidate %s/%s collects into the data assets of %s", plan.endpoint, plan.deployment, live.name)
        return collector

    def _deployment(
        self, plan: DeployPlan, live: Any, model: ModelVersion, collector: Any | None, mount_path: str | None
    ) -> Any:
        from azure.ai.ml.entities import ManagedOnlineDeployment

        if not isinstance(live, ManagedOnlineDeployment):
            raise PermanentError(
                f"live deployment {plan.endpoint}/{live.name} is a {type(live).__name__}; "
                "the service rolls out to managed online endpoints only"
            )
        no_code = model.type == "mlflow_model" and live.code_configuration is None
        return ManagedOnlineDeployment(
            name=plan.deployment,
            endpoint_name=plan.endpoint,
            model=str(model.id),
            # An MLflow model without scoring code is served by MLflow itself: an environment given
            # here would replace the one Azure ML builds from the model, and its scoring with it.
            environment=None if no_code else live.environment,
            code_configuration=live.code_configuration,
            environment_variables=dict(live.environment_variables or {}),
            instance_type=live.instance_type,
            instance_count=plan.instance_count or live.instance_count,
            scale_settings=live.scale_settings,  # type: ignore[arg-type]  # read from a managed deployment
            request_settings=live.request_settings,
            liveness_probe=live.liveness_probe,
            readiness_probe=live.readiness_probe,
            app_insights_enabled=bool(live.app_insights_enabled),
            egress_public_network_access=live.egress_public_network_access,
            # The data collector feeds v2 model monitoring: without it the new deployment collects
            # nothing once it is promoted, and the monitor has nothing to judge.
            data_collector=collector,
            # The live one's modelMountPath, read from the REST body (the SDK drops it on read).
            model_mount_path=mount_path,
            tags={**dict(live.tags or {}), **plan.tags},
            description=f"candidate {model.label}, started at 0% beside {live.name}",
        )
