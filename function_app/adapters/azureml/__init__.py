"""The Azure ML backend: carries decisions out through the real SDK (azure-ai-ml).

One module per port it implements, over one client:

- :mod:`.client`: the ``MLClient`` (built once per worker, on first use, with the worker's managed
  identity and the SDK's own retries off), who the service acts as, and the one call helper every SDK
  call goes through (the retry budget of :mod:`function_app.retry`, and the error translation).
- :mod:`.jobs`: the Jobs port (:class:`handlers.workspace_ports.Jobs`): retraining pipeline jobs.
- :mod:`.candidates`: what the candidate gate judges, and registering a candidate.
- :mod:`.deployments`: candidate deployments, traffic and retirement.
- :mod:`.batch`: the Deployments port for batch endpoints (``deploy.batch_endpoint``): candidate batch
  deployments and the switch of an endpoint's default deployment (``AzureMLActions.batch``).
- :mod:`.batch_jobs`: the BatchRuns port (:class:`handlers.rollout.compare.BatchRuns`): a batch
  candidate's comparison jobs, started and read with their MLflow metrics.
- :mod:`.monitors`: model monitors that follow a promotion.
- :mod:`.freshness`: the Freshness port (:class:`handlers.watcher.Freshness`): the champion's age, data-asset versions.
- :mod:`.registry`: model versions of the policy's Azure ML registry (a champion served from it).
- :mod:`.scoring`: the Scoring port (:class:`handlers.rollout.smoke.Scoring`): a deployment invoked
  directly, for a smoke test; :mod:`.samples`: its sample requests read from a data asset.

:class:`AzureMLActions` is the backend the runtime builds (:func:`function_app.runtime.make_actions`):
the Jobs and Deployments ports of :mod:`handlers.workspace_ports` in one object. Only these modules import
``azure.ai.ml``, and they do so on the first action, not at import.

Errors: the SDK's exceptions are translated at the boundary (:mod:`azure_errors` decides what is
transient). Transient ones (throttling, timeouts, 5xx) are retried inside the budget
(:mod:`function_app.retry`) and then raised as TransientError; the others become a PermanentError
whose message says what is wrong and where to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from function_app.adapters.azureml.batch import AzureMLBatch
from function_app.adapters.azureml.batch_jobs import AzureMLBatchJobs
from function_app.adapters.azureml.candidates import AzureMLCandidates
from function_app.adapters.azureml.client import BACKEND, AzureMLClient, Workspace
from function_app.adapters.azureml.deployments import AzureMLDeployments
from function_app.adapters.azureml.freshness import AzureMLFreshness
from function_app.adapters.azureml.jobs import AzureMLJobs
from function_app.adapters.azureml.lineage import AzureMLLineage
from function_app.adapters.azureml.monitors import AzureMLMonitors
from function_app.adapters.azureml.registry import RegistryModels, RegistryShare
from function_app.adapters.azureml.samples import DataSamples
from function_app.adapters.azureml.scoring import AzureMLScoring

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from function_app.retry import RetryPolicy
    from function_app.settings import Settings
    from handlers.creators import RunCreator
    from handlers.freshness import AssetVersion, Champion
    from handlers.pickup import RegistryVersionInfo
    from handlers.plans import DeployPlan, JobPlan
    from handlers.rollout.compare import BatchRun
    from handlers.rollout.smoke import Scored
    from handlers.rollout_rules import SmokeData
    from handlers.workspace_ports import ActionResult, CandidateFacts, DeploymentInfo, JobInfo
    from handlers.worthiness import RetrainFacts

__all__ = ["AzureMLActions", "AzureMLClient", "Workspace"]


class AzureMLActions:
    """The Jobs and Deployments ports on one client: each call goes to the module of its port."""

    name = BACKEND

    def __init__(self, ml_client: Any, workspace: Workspace, retry: RetryPolicy) -> None:
        """``ml_client``: an ``MLClient``, or a function that builds one on first use (once per worker)."""
        self._on(AzureMLClient(ml_client, workspace, retry))

    def _on(self, client: AzureMLClient) -> None:
        self.client = client
        self.workspace: Workspace = client.workspace
        self.retry: RetryPolicy = client.retry
        self.jobs = AzureMLJobs(client)
        registries = RegistryModels(client.registry_client)
        self.candidates = AzureMLCandidates(client, registries)
        self.shares = RegistryShare(client, registries)
        self.deployments = AzureMLDeployments(client, self.candidates)
        self.monitors = AzureMLMonitors(client)
        self.batch = AzureMLBatch(client, self.candidates)  # the Deployments port of batch endpoints
        self.scoring = AzureMLScoring(client)
        self.batch_jobs = AzureMLBatchJobs(client, self.candidates)
        self.data_samples = DataSamples(client)
        self.freshness = AzureMLFreshness(client, self.candidates)
        self.lineage = AzureMLLineage(client, self.freshness)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        credential: TokenCredential,
        retry: RetryPolicy | None = None,
        **client_kwargs: Any,
    ) -> AzureMLActions:
        """The worker's backend. Nothing is imported or built until the first action."""
        actions = cls.__new__(cls)
        actions._on(AzureMLClient.from_settings(settings, credential=credential, retry=retry, **client_kwargs))
        return actions

    @property
    def ml(self) -> Any:
        """The ``MLClient`` (built on first use)."""
        return self.client.ml

    @property
    def roles_settling(self) -> bool:
        return self.client.roles_settling

    def tracking_uri(self) -> str:
        return self.client.tracking_uri()

    # ------------------------------------------------------------------ the Jobs port

    def submit_retrain(self, plan: JobPlan) -> ActionResult:
        return self.jobs.submit_retrain(plan)

    def find_retrain(self, plan: JobPlan) -> ActionResult | None:
        return self.jobs.find_retrain(plan)

    def job_status(self, name: str) -> JobInfo | None:
        return self.jobs.job_status(name)

    def retrain_facts(self, plan: JobPlan) -> RetrainFacts:
        return self.lineage.retrain_facts(plan)

    def run_creator(self, run_id: str) -> RunCreator:
        return self.jobs.run_creator(run_id)

    def data_creator(self, name: str, version: str) -> RunCreator:
        return self.freshness.data_creator(name, version)

    def latest_data(self, name: str) -> str:
        return self.freshness.latest_data(name)

    def model_creator(self, name: str, version: str) -> RunCreator:
        return self.freshness.model_creator(name, version)

    def latest_model(self, name: str) -> str:
        return self.freshness.latest_model(name)

    # ------------------------------------------------------------------ the Deployments port

    def candidate_facts(self, plan: DeployPlan) -> CandidateFacts:
        return self.candidates.candidate_facts(plan)

    def start_deploy(self, plan: DeployPlan, facts: CandidateFacts) -> ActionResult:
        return self.deployments.start_deploy(plan, facts)

    def find_deploy(self, plan: DeployPlan) -> ActionResult | None:
        return self.deployments.find_deploy(plan)

    def deployment_state(self, endpoint: str, deployment: str) -> str | None:
        return self.deployments.deployment_state(endpoint, deployment)

    def endpoint_traffic(self, endpoint: str) -> dict[str, int]:
        return self.deployments.endpoint_traffic(endpoint)

    def set_traffic(self, endpoint: str, traffic: dict[str, int] | None, mirror: dict[str, int] | None = None) -> bool:
        return self.deployments.set_traffic(endpoint, traffic, mirror)

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        return self.deployments.list_deployments(endpoint)

    def delete_deployment(self, endpoint: str, deployment: str) -> bool:
        return self.deployments.delete_deployment(endpoint, deployment)

    def monitors_targeting(self, endpoint: str, deployment: str) -> list[str]:
        return self.monitors.monitors_targeting(endpoint, deployment)

    def retarget_monitor(self, schedule: str, endpoint: str, deployment: str) -> bool:
        return self.monitors.retarget_monitor(schedule, endpoint, deployment)

    def share_promoted(
        self, endpoint: str, deployment: str, registry: str, lineage: Mapping[str, str]
    ) -> dict[str, Any]:
        return self.shares.share(endpoint, deployment, registry, lineage)

    # ------------------------------------------------------------------ the Freshness port

    def champion(self, endpoint: str, registry: str | None = None) -> Champion | None:
        return self.freshness.champion(endpoint, registry)

    def data_versions(self, name: str) -> list[AssetVersion]:
        return self.freshness.data_versions(name)

    # ------------------------------------------------------------------ the registry (handlers.pickup)

    def registry_versions(self, registry: str, model: str) -> list[RegistryVersionInfo]:
        return self.shares.registries.versions(
            self.retry.budget(), registry, model, roles_settling=self.client.roles_settling
        )

    # ------------------------------------------------------------------ the Scoring port

    def score(self, endpoint: str, deployment: str, body: Any, timeout: float) -> Scored:
        return self.scoring.score(endpoint, deployment, body, timeout)

    def samples(self, data: SmokeData) -> list[Any]:
        return self.data_samples.samples(data)

    # ------------------------------------------------------------------ the BatchRuns port

    def invoke_batch(self, endpoint: str, deployment: str, data: str, job: str) -> str:
        return self.batch_jobs.invoke_batch(endpoint, deployment, data, job)

    def batch_run(self, job: str, step: str | None) -> BatchRun | None:
        return self.batch_jobs.batch_run(job, step)

    def cancel_batch(self, job: str) -> bool:
        return self.batch_jobs.cancel_batch(job)
