"""The MLflow tracking server of the fake workspace (the MLflow REST API at its tracking URI, and the run
history the SDK reads a pipeline step from): every Azure ML job is an MLflow run."""

from __future__ import annotations

import re
from typing import Any

from tests.fake_arm_common import ARM_HOST, PROVIDER, Call, MlflowAnswer
from tests.fake_http import Answer, Refusal, Unexpected, token_audience


class Mlflow:
    """Mixed into :class:`tests.fake_arm.FakeArm` (``self`` is the fake, its stores and its clock):
    MLflow runs, their metrics and tags, ``runs/get`` and ``runs/search``."""

    def log_mlflow_run(
        self,
        run_id: str,
        *,
        experiment: str = "Default",
        name: str | None = None,
        metrics: dict[str, float] | None = None,
        parent: str | None = None,
        status: str = "FINISHED",
        tags: dict[str, str] | None = None,
    ) -> None:
        """The MLflow run every Azure ML job is (run id = job name), with the metrics it logged; a
        pipeline step's run carries its parent in the tag ``mlflow.parentRunId``, its display name
        as ``run_name`` (MLflow REST API, Run / RunInfo / RunData)."""
        logged = [{"key": "mlflow.runName", "value": name or run_id}]
        if parent is not None:  # Azure ML sets both on a step's run (model monitoring reads mlflow.rootRunId)
            root = self._root_of(parent)
            logged += [{"key": "mlflow.parentRunId", "value": parent}, {"key": "mlflow.rootRunId", "value": root}]
        logged += [{"key": k, "value": v} for k, v in (tags or {}).items()]
        self.mlflow_runs[run_id] = {
            "info": {
                "run_id": run_id,
                "run_uuid": run_id,
                "run_name": name or run_id,
                "experiment_id": self.experiment_id(experiment),
                "status": status,
                "start_time": 1_795_000_000_000,
                "end_time": 1_795_000_600_000,
                "artifact_uri": f"azureml://experiments/{experiment}/runs/{run_id}/artifacts",
                "lifecycle_stage": "active",
            },
            "data": {
                "metrics": [
                    {"key": k, "value": v, "timestamp": 1_795_000_500_000, "step": 0}
                    for k, v in (metrics or {}).items()
                ],
                "params": [],
                "tags": logged,
            },
        }

    def _root_of(self, run_id: str) -> str:
        """The top-level run above ``run_id`` (itself when it has no parent), as MLflow tags tell it."""
        run = self.mlflow_runs.get(run_id)
        tags = {t["key"]: t["value"] for t in (run or {}).get("data", {}).get("tags", [])}
        return str(tags.get("mlflow.rootRunId") or run_id)

    def tag_mlflow_run(self, run_id: str, tags: dict[str, str]) -> None:
        """Tags set on an MLflow run after it was logged (``MlflowClient.set_tag``)."""
        logged = self.mlflow_runs[run_id]["data"]["tags"]
        logged += [{"key": k, "value": v} for k, v in tags.items()]

    def mlflow_calls(self, endpoint: str = "") -> list[Call]:
        return [c for c in self.calls if c.path.startswith("/mlflow/") and c.path.endswith(endpoint)]

    def _mlflow(self, call: Call) -> Answer:
        """The MLflow REST API at the workspace's tracking URI (``/mlflow/v1.0/<workspace id>``):
        ``GET runs/get?run_id=`` and ``POST runs/search``, with an Azure Resource Manager token."""
        prefix = f"/mlflow/v1.0{self.ws_path}/api/2.0/mlflow/"
        if call.method == "GET" and call.path == "/discovery":  # the workspace's discoveryUrl: its services
            base = f"https://{self.mlflow_host}"
            return 200, {}, {"api": base, "catalog": base, "experimentation": base, "history": base}
        if call.method == "GET" and call.path.startswith(f"/history/v1.0{self.ws_path}/runs/"):
            if token_audience(call.headers.get("Authorization")) != f"https://{ARM_HOST}":
                raise Unexpected("run history call without a bearer token for Azure Resource Manager")
            # reading a run is experiments/runs/read, as for MLflow (the error body's shape is unverified)
            self._authorize(call, f"{PROVIDER}/workspaces/experiments/runs/read", self.ws_path)
            run_id = call.path.rsplit("/", 1)[1]
            run = self.steps.get(run_id) or self._history_run(run_id)
            if run is None:
                raise Refusal(404, "UserError", f"Run {run_id} was not found")
            return 200, {}, run
        if not call.path.startswith(prefix):
            raise Unexpected(f"MLflow path {call.path}")
        if token_audience(call.headers.get("Authorization")) != f"https://{ARM_HOST}":
            raise Unexpected("MLflow call without a bearer token for https://management.azure.com")
        endpoint = call.path.removeprefix(prefix)
        if endpoint in ("runs/get", "runs/search"):  # "MLflow operations" (Azure ML docs, Manage roles)
            self._authorize(call, f"{PROVIDER}/workspaces/experiments/runs/read", self.ws_path, mlflow=True)
        if (call.method, endpoint) == ("GET", "runs/get"):
            run_id = call.query.get("run_id") or call.query.get("run_uuid")
            run = self.mlflow_runs.get(str(run_id))
            if run is None:
                raise MlflowAnswer(404, "RESOURCE_DOES_NOT_EXIST", f"Run '{run_id}' not found.")
            return 200, {}, {"run": run}
        if (call.method, endpoint) == ("POST", "runs/search"):
            return 200, {}, self._search_runs(call)
        if (call.method, endpoint) == ("GET", "experiments/get-by-name"):  # MLflow's get_experiment_by_name
            self._authorize(call, f"{PROVIDER}/workspaces/experiments/read", self.ws_path, mlflow=True)
            name = str(call.query.get("experiment_name") or "")
            wanted = self.experiment_id(name)
            if not any(r["info"]["experiment_id"] == wanted for r in self.mlflow_runs.values()):
                raise MlflowAnswer(404, "RESOURCE_DOES_NOT_EXIST", f"Experiment '{name}' does not exist.")
            return 200, {}, {"experiment": {"experiment_id": wanted, "name": name, "lifecycle_stage": "active"}}
        raise Unexpected(f"MLflow endpoint {call.method} {endpoint}")

    def _search_runs(self, call: Call) -> dict[str, Any]:
        body = call.body or {}
        experiments = body.get("experiment_ids")
        if not isinstance(experiments, list) or not experiments:
            raise MlflowAnswer(400, "INVALID_PARAMETER_VALUE", "experiment_ids must be a non-empty list")
        text = str(body.get("filter") or "")
        if "`" in text:
            # Azure ML's support matrix for MLflow queries lists names with escaped special characters
            # (backticks) as not supported. The exact answer is unverified: an MLflow-shaped 400.
            raise MlflowAnswer(
                400,
                "INVALID_PARAMETER_VALUE",
                f"Invalid filter {text!r}: names escaped with backticks are not supported by Azure Machine Learning",
            )
        match = re.fullmatch(r"\s*tags\.mlflow\.parentRunId\s*=\s*'([^']*)'\s*", text)
        if match is None and text.strip():
            raise Unexpected(f"runs/search filter {body.get('filter')!r}")
        found = [
            r
            for r in self.mlflow_runs.values()
            if r["info"]["experiment_id"] in experiments
            and (match is None or {"key": "mlflow.parentRunId", "value": match.group(1)} in r["data"]["tags"])
        ]
        found.sort(key=lambda r: -int(r["info"]["start_time"]))  # MLflow's default order: the newest run first
        size = int(body.get("max_results") or 1000)
        start = int(body.get("page_token") or 0)
        page = found[start : start + size]
        out: dict[str, Any] = {"runs": page}
        if start + size < len(found):
            out["next_page_token"] = str(start + size)
        return out
