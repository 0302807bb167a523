"""Reading MLflow runs of an Azure ML workspace through the MLflow REST API, at its tracking URI.

SDK v2 has no metrics API ("use MLflow"): pipeline steps log their metrics with MLflow in their own
child runs. This reader asks the workspace's MLflow tracking server (``Workspace.mlflow_tracking_uri``,
``azureml://<region>.api.azureml.ms/mlflow/v1.0/subscriptions/.../workspaces/<ws>``, served over
https) with plain azure-core HTTP: ``GET /api/2.0/mlflow/runs/get?run_id=`` and
``POST /api/2.0/mlflow/runs/search`` (the MLflow REST API). It does not import the ``mlflow`` package.

It uses the service's credential (a bearer token for Azure Resource Manager, as the SDK's own data-plane
clients do) and the same transport, with azure-core's retries off: every call goes through the
caller's :class:`function_app.retry.Budget`. Nothing is imported or built until the first call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from function_app.adapters.clients import LazyClient

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from function_app.retry import Budget

log = logging.getLogger(__name__)

ARM_SCOPE = "https://management.azure.com/.default"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
PAGE = 100  # runs/search page size; a pipeline has a few steps
MAX_PAGES = 10
# How far below a run its steps are read (:meth:`MlflowRuns.descendants`): its steps, and the steps of those that
# are pipeline components (a sub-pipeline's steps are children of the component's run, not of the pipeline's).
DEPTH = 2
MAX_SEARCHES = 50  # runs/search calls for one run's steps (the run, then each step of the levels above the last)
# Why a run's steps were not read: more of them than the bounded search reads (a gate that cannot read refuses).
TOO_MANY_STEPS = (
    f"its steps and its sub-pipelines' need more than {MAX_SEARCHES} searches of MLflow; "
    "name a step of the pipeline itself or of a sub-pipeline with fewer steps"
)


def named(steps: list[MlflowRun], step: str) -> list[MlflowRun]:
    """The runs among ``steps`` named ``step``: by its exact name, else ignoring case."""
    return [s for s in steps if s.name == step] or [s for s in steps if s.name.casefold() == step.casefold()]


def not_told_apart(found: list[MlflowRun], step: str, under: str) -> str | None:
    """Why none of ``found``, the runs under ``under`` (a pipeline run, a batch job) named ``step``, is read when
    there are two or more (None when there is one): a run's creator sets its ``mlflow.parentRunId``, so a run
    posing as the step cannot be told from the step, and reading either would let the poser decide."""
    if len(found) < 2:
        return None
    ids = ", ".join(sorted(s.run_id for s in found)[:5])
    return (
        f"{len(found)} MLflow runs under {under} are named {step!r} ({ids}); which is its step cannot be told "
        f"(whoever creates an MLflow run sets its {PARENT_TAG})"
    )


@dataclass(frozen=True)
class MlflowRun:
    """One MLflow run as the REST API returns it: the latest value of each metric, and its tags."""

    run_id: str
    experiment_id: str
    name: str  # run_name (the step's display name for a pipeline step)
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    start_time: float | None = None  # seconds since the epoch (the API's start_time is in milliseconds)

    @classmethod
    def from_rest(cls, run: dict[str, Any]) -> MlflowRun:
        info, data = run.get("info") or {}, run.get("data") or {}
        tags = {str(t.get("key")): str(t.get("value", "")) for t in data.get("tags") or []}
        metrics: dict[str, tuple[int, int, float]] = {}
        for m in data.get("metrics") or []:  # runs/get gives the latest value per key; keep the newest anyway
            key, value = str(m.get("key")), m.get("value")
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            order = (int(m.get("step") or 0), int(m.get("timestamp") or 0))
            if key not in metrics or order >= metrics[key][:2]:
                metrics[key] = (*order, float(value))
        return cls(
            run_id=str(info.get("run_id") or info.get("run_uuid") or ""),
            experiment_id=str(info.get("experiment_id") or ""),
            name=str(info.get("run_name") or tags.get(RUN_NAME_TAG) or ""),
            status=str(info.get("status") or ""),
            metrics={k: v[2] for k, v in metrics.items()},
            tags=tags,
            start_time=float(info["start_time"]) / 1000 if isinstance(info.get("start_time"), (int, float)) else None,
        )


def https_tracking_uri(uri: str) -> str:
    """``azureml://<region>.api.azureml.ms/mlflow/v1.0/...`` as the https base URL it is served at."""
    text = uri.strip().rstrip("/")
    if text.startswith("azureml://"):
        return "https://" + text.removeprefix("azureml://")
    if text.startswith("https://"):
        return text
    raise ValueError(f"{uri!r} is not an Azure ML MLflow tracking URI (azureml://... or https://...)")


class MlflowRuns:
    """The MLflow REST API of one workspace. ``credential``: the service's credential, or a function
    that gives it; ``tracking_uri``: a function that gives the workspace's tracking URI (read once);
    ``client_kwargs``: what the SDK clients get too (``transport=`` in tests)."""

    def __init__(
        self,
        credential: TokenCredential | Callable[[], TokenCredential],
        tracking_uri: Callable[[], str],
        **client_kwargs: Any,
    ) -> None:
        self._credential = LazyClient(credential)
        self._uri = LazyClient(lambda: https_tracking_uri(tracking_uri()))
        self._client = LazyClient(self._build)
        self._kwargs = client_kwargs

    def _build(self) -> Any:
        from azure.core import PipelineClient
        from azure.core.pipeline import policies

        pipeline = [
            policies.HeadersPolicy(),
            policies.RetryPolicy(retry_total=0),  # the caller's budget owns retries
            policies.BearerTokenCredentialPolicy(self._credential.get(), ARM_SCOPE),
            policies.NetworkTraceLoggingPolicy(),
        ]
        return PipelineClient(self._uri.get(), policies=pipeline, **self._kwargs)

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        from azure.core.rest import HttpRequest

        url = f"{self._uri.get()}/api/2.0/mlflow/{path}"
        request = HttpRequest(method, url, json=body, headers={"Accept": "application/json"} if body is None else None)
        response = self._client.get().send_request(request)
        if response.status_code == 404:
            raise ResourceNotFoundError(response=response)
        if response.status_code >= 400:
            raise HttpResponseError(response=response)
        text = response.text()
        loaded = json.loads(text) if text else {}
        return loaded if isinstance(loaded, dict) else {}

    def _search(self, body: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        return lambda: self._send("POST", "runs/search", body)

    def run(self, budget: Budget, run_id: str) -> MlflowRun | None:
        """``runs/get`` of ``run_id``; None when the tracking server has no such run."""
        query = urlencode({"run_id": run_id})
        try:
            found = budget.call(f"MLflow run {run_id}", lambda: self._send("GET", f"runs/get?{query}"))
        except ResourceNotFoundError:
            return None
        return MlflowRun.from_rest(found.get("run") or {})

    def children(self, budget: Budget, parent: MlflowRun) -> list[MlflowRun]:
        """The runs whose ``mlflow.parentRunId`` is ``parent`` (a pipeline's steps), by ``runs/search``."""
        body: dict[str, Any] = {
            "experiment_ids": [parent.experiment_id],
            # As Azure ML documents it ("Query & compare experiments and runs with MLflow", child
            # runs): its support matrix lists backtick-escaped names as not supported.
            "filter": f"tags.{PARENT_TAG} = '{parent.run_id}'",
        }
        return self._pages(budget, f"MLflow runs of pipeline {parent.run_id}", body)

    def descendants(self, budget: Budget, root: MlflowRun) -> list[MlflowRun] | None:
        """The steps of ``root`` down to :data:`DEPTH` levels, level by level (its own steps first, then those of
        its pipeline components), by :meth:`children`; None when reading them all takes more than
        :data:`MAX_SEARCHES` searches, so that a caller never judges on steps it did not read. A step deeper
        than :data:`DEPTH` is not among them."""
        found: list[MlflowRun] = []
        seen, level, searches = {root.run_id}, [root], 0
        for _ in range(DEPTH):
            below: list[MlflowRun] = []
            for parent in level:
                searches += 1
                if searches > MAX_SEARCHES:
                    return None
                below += [c for c in self.children(budget, parent) if c.run_id not in seen]
                seen.update(c.run_id for c in below)
            found += below
            level = below
        return found

    def experiment_runs(self, budget: Budget, experiment: str) -> list[MlflowRun]:
        """The top-level runs of the experiment named ``experiment`` (``experiments/get-by-name``, then
        ``runs/search`` over its id; a step's run, which carries ``mlflow.parentRunId``, is left out); []
        when the tracking server has no such experiment."""
        query = urlencode({"experiment_name": experiment})
        try:
            found = budget.call(
                f"MLflow experiment {experiment}", lambda: self._send("GET", f"experiments/get-by-name?{query}")
            )
        except ResourceNotFoundError:
            return []
        experiment_id = str((found.get("experiment") or {}).get("experiment_id") or "")
        if not experiment_id:
            return []
        runs = self._pages(budget, f"MLflow runs of experiment {experiment}", {"experiment_ids": [experiment_id]})
        return [r for r in runs if PARENT_TAG not in r.tags]

    def _pages(self, budget: Budget, what: str, query: dict[str, Any]) -> list[MlflowRun]:
        """The runs ``runs/search`` finds for ``query``, page by page (at most :data:`MAX_PAGES`)."""
        out: list[MlflowRun] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            body: dict[str, Any] = {**query, "max_results": PAGE}
            if token:
                body["page_token"] = token
            page = budget.call(what, self._search(body))
            out.extend(MlflowRun.from_rest(r) for r in page.get("runs") or [])
            token = page.get("next_page_token")
            if not token:
                break
        return out
