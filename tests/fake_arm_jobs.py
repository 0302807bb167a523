"""Jobs in the fake ARM: a pipeline job submitted from a registered pipeline component (its inputs, compute
and experiment checked), a finished run seeded by a test, and a pipeline's step runs (run history)."""

from __future__ import annotations

import copy
import re
import uuid
from typing import Any

from tests.fake_arm_common import CREATED, PROVIDER, Call, job_system_data, run_history_user
from tests.fake_http import APP_CLAIMS, USER_CLAIMS, Answer, Refusal, Unexpected, token_audience, token_claims

JOB_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9\-_]{0,254}$")
JOB_INPUT_TYPES = frozenset(
    {"literal", "uri_file", "uri_folder", "mltable", "custom_model", "mlflow_model", "triton_model"}
)


class Jobs:
    """Mixed into :class:`tests.fake_arm.FakeArm` (``self`` is the fake, its stores and its clock):
    pipeline jobs and their step runs."""

    def add_job(
        self,
        name: str,
        *,
        experiment: str = "Default",
        status: str = "Completed",
        outputs: tuple[str, ...] = ("model",),
        tags: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        created_by: dict[str, Any] | None = None,
        display_name: str | None = None,
        inputs: dict[str, str] | None = None,
    ) -> None:
        """A finished run, as another client left it (its outputs can be registered as models), with
        the MLflow metrics the pipeline run itself logged; ``created_by``: the claims of whoever
        created it (default: a workspace user, :data:`USER_CLAIMS`); ``inputs``: its data inputs (name ->
        a data asset reference such as ``azureml:name:version``), as the REST API's ``JobInput`` (mltable)."""
        self.jobs[name] = self._job_resource(
            name,
            {
                "jobType": "Pipeline",
                "displayName": display_name,
                "experimentName": experiment,
                "inputs": {
                    k: {"jobInputType": "mltable", "uri": v, "mode": "ReadOnlyMount"} for k, v in (inputs or {}).items()
                },
                "outputs": {o: {"jobOutputType": "custom_model", "mode": "ReadWriteMount"} for o in outputs},
                "tags": dict(tags or {}),
                "properties": {},
            },
            status,
            job_system_data(USER_CLAIMS if created_by is None else created_by, CREATED),
        )
        self.creators[name] = dict(USER_CLAIMS if created_by is None else created_by)
        self.log_mlflow_run(name, experiment=experiment, metrics=metrics)

    def add_step(
        self,
        parent: str,
        name: str,
        *,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """A pipeline step of job ``parent`` (a child job with its own MLflow run and run-history run, with
        ``tags``); returns its run id. ``parent`` may be a step itself (a pipeline component's run, whose steps
        are its children): the step's root is then the pipeline job above them both."""
        run_id = f"{parent}_{name}_{len(self.mlflow_runs):04d}"
        root = self._root_of(parent)
        experiment = self.jobs[root]["properties"].get("experimentName") or "Default"
        self.log_mlflow_run(run_id, experiment=experiment, name=name, metrics=metrics, parent=parent, tags=tags)
        # What run history keeps of it (the SDK reads a step there: MFE does not serve child jobs).
        self.steps[run_id] = {
            "runId": run_id,
            "runUuid": str(uuid.uuid5(uuid.NAMESPACE_URL, run_id)),
            "parentRunId": parent,
            "rootRunId": root,
            "experimentId": self.experiment_id(experiment),
            "status": "Completed",
            "displayName": name,
            "name": name,
            "runType": "azureml.StepRun",
            "createdUtc": "2026-11-20T09:00:00.000Z",
            "startTimeUtc": "2026-11-20T09:01:00.000Z",
            "endTimeUtc": "2026-11-20T09:10:00.000Z",
            "tags": dict(tags or {}),
            "createdBy": run_history_user(self.creators.get(parent, APP_CLAIMS)),
            # As Azure ML records a step's run: its pipeline job (the parent run) under azureml.pipelinerunid
            # (Microsoft's azureml-assets components read it so); azureml.pipeline is another id, the pipeline's.
            "properties": {
                "azureml.runsource": "azureml.StepRun",
                "azureml.nodeid": name,
                "azureml.pipelinerunid": parent,  # a nested step's: its component's run (unverified)
            },
            "compute": {"target": "cpu-cluster"},
        }
        return run_id

    @staticmethod
    def experiment_id(experiment: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"experiment:{experiment}"))

    def set_job_status(self, name: str, status: str, *, tags: dict[str, str] | None = None) -> None:
        """The job moves on, as Azure ML moves it ('Running', 'Completed', 'Failed', 'Canceled', ...);
        ``tags`` are added to its tags (what the run logged, e.g. its metric)."""
        props = self.jobs[name]["properties"]
        props["status"] = status
        props["tags"] = {**(props.get("tags") or {}), **(tags or {})}

    @property
    def job_puts(self) -> list[Call]:
        return self.requests_to("PUT", r"^jobs/")

    def _get_job(self, call: Call, name: str) -> Answer:
        """A pipeline step's run is a job too, but the jobs API answers it without ``properties``: the SDK
        reads that as a pipeline child job ("Child jobs are no longer available through MFE",
        ``JobOperations.get``) and asks run history (``/history/v1.0/.../runs/<id>``) instead. (The
        REST specs' examples show only top-level jobs; the empty answer is the SDK's reading of it.)"""
        self.batch.settle()  # a batch job ends on the fake clock
        if name in self.steps and name not in self.jobs:
            return 200, {}, {"id": self.arm_id("jobs", name), "name": name, "type": f"{PROVIDER}/workspaces/jobs"}
        return 200, {}, self._found(self.jobs.get(name), f"job {name}")

    def _put_job(self, call: Call, name: str) -> Answer:
        props = (call.body or {}).get("properties") or {}
        self._check_pipeline_job(call, name, props)
        existing = self.jobs.get(name)
        if existing is not None:
            old = existing["properties"]
            changed = [
                k
                for k in ("jobType", "componentId", "computeId", "experimentName", "inputs")
                if old.get(k) != props.get(k)
            ]
            if changed:
                raise Refusal(
                    400,
                    "UserError",
                    f"Job {name} already exists; an existing job's {', '.join(changed)} cannot be changed, "
                    "only its tags, display name, description and new properties",
                )
            old["tags"] = dict(props.get("tags") or {})
            for key in ("displayName", "description"):
                if props.get(key) is not None:
                    old[key] = props[key]
            return 200, {}, existing
        if (
            call.headers.get("x-azureml-token") is None
            or token_audience("Bearer " + call.headers["x-azureml-token"]) != "https://ml.azure.com"
        ):
            raise Refusal(
                401, "UserError", "a pipeline job is submitted with the user's Azure ML token (x-azureml-token)"
            )
        claims = token_claims(call.headers.get("Authorization"))
        job = self._job_resource(name, props, "NotStarted", job_system_data(claims, self._now_iso()))
        self.creators[name] = claims
        # The service binds the outputs the job does not name to the pipeline component's outputs.
        component = self._resource_by_id(self.components, props.get("componentId"))
        assert component is not None  # checked above
        declared = component["properties"]["componentSpec"]["outputs"]
        job["properties"]["outputs"] = {
            k: {"jobOutputType": v["type"], "mode": "ReadWriteMount"} for k, v in declared.items()
        } | dict(props.get("outputs") or {})
        self.jobs[name] = job
        self.log_mlflow_run(name, experiment=str(props.get("experimentName")), status="SCHEDULED")
        return 201, {}, job

    def _check_pipeline_job(self, call: Call, name: str, props: dict[str, Any]) -> None:
        if not JOB_NAME.match(name):  # the REST API's pattern for a job's name
            raise Refusal(400, "UserError", f"Job name {name!r} must match {JOB_NAME.pattern}")
        if props.get("jobType") != "Pipeline":
            raise Unexpected(f"jobType {props.get('jobType')!r}, expected a pipeline job")
        component = self._resource_by_id(self.components, props.get("componentId"))
        if component is None:
            raise Refusal(400, "UserError", f"Component {props.get('componentId')} not found")
        if self._resource_by_id({("c", k): v for k, v in self.computes.items()}, props.get("computeId")) is None:
            raise Refusal(400, "UserError", f"Compute {props.get('computeId')} not found in workspace {self.workspace}")
        if not props.get("experimentName"):
            raise Unexpected("no experimentName")
        declared = component["properties"]["componentSpec"]["inputs"]
        for key, value in (props.get("inputs") or {}).items():
            if key not in declared:
                raise Refusal(400, "UserError", f"Input {key} is not an input of component {props['componentId']}")
            kind = value.get("jobInputType")
            if kind not in JOB_INPUT_TYPES:
                raise Unexpected(f"input {key}: jobInputType {kind!r}")
            if kind == "literal" and not isinstance(value.get("value"), str):
                raise Unexpected(f"input {key}: a literal's value is a string on the wire")
            if kind != "literal":
                uri = str(value.get("uri") or "")
                if "/data/" in uri and self._resource_by_id(self.data, uri) is None:
                    raise Refusal(400, "UserError", f"Data asset {uri} not found")
                if not uri:
                    raise Unexpected(f"input {key}: no uri")
        tags = props.get("tags") or {}
        if not all(isinstance(v, str) for v in tags.values()):
            raise Unexpected("tag values are strings")

    def _job_resource(
        self, name: str, props: dict[str, Any], status: str, system: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A job's resource; ``system``: its ``systemData`` (default: created by the function app's identity)."""
        stored = copy.deepcopy(props)
        stored["status"] = status
        stored["services"] = {
            "Studio": {"jobServiceType": "Studio", "endpoint": f"https://ml.azure.com/runs/{name}?wsid={self.ws_path}"}
        }
        return {
            "id": self.arm_id("jobs", name),
            "name": name,
            "type": f"{PROVIDER}/workspaces/jobs",
            "systemData": system if system is not None else job_system_data(APP_CLAIMS, CREATED),
            "properties": stored,
        }

    def _history_run(self, name: str) -> dict[str, Any] | None:
        """What run history keeps of a top-level job (run id = job name): its status, experiment and tags as
        the job has them, and who created it (``createdBy``, from the creating token)."""
        job = self.jobs.get(name)
        if job is None:
            return None
        props = job["properties"]
        experiment = str(props.get("experimentName") or "Default")
        return {
            "runId": name,
            "runUuid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            "rootRunId": name,
            "experimentId": self.experiment_id(experiment),
            "status": props.get("status"),
            "displayName": props.get("displayName") or name,
            "name": name,
            "runType": "azureml.PipelineRun",
            "createdUtc": job["systemData"].get("createdAt"),
            "tags": dict(props.get("tags") or {}),
            "properties": dict(props.get("properties") or {}),
            "createdBy": run_history_user(self.creators.get(name, APP_CLAIMS)),
        }
