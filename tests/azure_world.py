"""One Azure ML workspace behind the fake ARM, the Azure ML backend built from settings, and the
service on a ledger from a :class:`tests.ledgers.LedgerSpec`: shared by the SDK tests and the
crash-point tests."""

from __future__ import annotations

import copy
import random
from datetime import datetime
from pathlib import Path
from typing import Any

from function_app.adapters.azureml import AzureMLActions
from function_app.adapters.monitor_guards import MonitorGuards
from function_app.adapters.monitor_health import MonitorHealth
from function_app.adapters.monitor_metrics import MonitorMetrics, endpoint_resource_id
from function_app.retry import RetryPolicy
from function_app.settings import Settings, job_name_key
from handlers.records import DecisionRecord
from tests import rbac
from tests.builders import EXAMPLE_POLICY, MODEL, ours, run_event
from tests.conftest import load_sample
from tests.crashes import DiesAfterActing, WorkerDied
from tests.fake_arm import FakeArm
from tests.fake_arm_common import FakeClock
from tests.fake_http import FakeCredential
from tests.fake_logs import FakeLogs
from tests.fake_metrics import FakeMetrics
from tests.fakes import Clock
from tests.ledgers import LedgerSpec
from tests.world import World

SUB, RG, WS = "7a3c5f0e-1111-4d2b-9e8a-2b6f1c0d9e77", "rg-mlops", "ws-retrain"
REGISTRY_SUB = "5d1e0c2b-2222-4c3d-8e9f-0a1b2c3d4e5f"  # the registry's own subscription
WORKSPACE_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{WS}"
ENDPOINT = "diabetes-endpoint"
DATASET = "diabetes-training"  # the data asset the example policy trains on (a v1 event's dataset id is not one)
DRIFT_SAMPLE = "Microsoft.MachineLearningServices.DatasetDriftDetected.eventgrid.json"
RUN_SAMPLE = "Microsoft.MachineLearningServices.RunCompleted.eventgrid.json"
# The environment's own Log Analytics workspace, where infra/ grants the app Log Analytics Reader (tests/rbac.py world)
LOGS_WORKSPACE = (
    f"/subscriptions/{SUB}/resourceGroups/rg-retrain-dev/providers/Microsoft.OperationalInsights/workspaces/"
    "log-retrain-dev"
)
JOB_NAME_KEY = "5f0c9d2e7a41b3c8" * 4  # RETRAIN_JOB_NAME_KEY: this service's secret, which no workspace user holds
REGION = "westeurope"  # the workspace's region, and so its online endpoints'
APP_REGION = "swedencentral"  # the function app's (azd's location): a Flex Consumption region, not the workspace's


def _symbol(expression: Any) -> Any:
    """The expression ``a.b.c`` as the string 'a.b.c' (a plain name stays itself)."""
    if isinstance(expression, dict) and expression.get("operator", {}).get("type") == "property_accessor":
        operands = expression["operator"]["operands"]
        return f"{_symbol(operands['operand_1'])}.{_symbol(operands['operand_2'])}"
    return expression


def infra_metrics_region() -> str:
    """The region infra/main.bicep gives RETRAIN_METRICS_REGION, in this world: the app's location
    (``location``) or the workspace's (``workspaceAccess.outputs.location``)."""
    from tests.bicep import bicep

    value = _symbol(bicep("main.bicep")["variables"]["appSettings"]["value"]["RETRAIN_METRICS_REGION"])
    regions = {"location": APP_REGION, "workspaceAccess.outputs.location": REGION}
    assert value in regions, f"infra/main.bicep sets RETRAIN_METRICS_REGION to {value!r}, which this world cannot place"
    return regions[value]


def in_workspace(sample: str) -> dict[str, Any]:
    """A published sample whose topic is the workspace these tests configure (not the placeholder)."""
    [raw] = copy.deepcopy(load_sample(sample))
    raw["topic"] = WORKSPACE_ID
    return dict(raw)


class WorldTime(Clock):
    """The workers' time (``datetime``); moving it on moves the fake ARM's clock as far, so that Azure
    ML's operations (minutes on that clock) are done when the workers' time says they would be."""

    def __init__(self, arm_clock: FakeClock) -> None:
        self._arm_clock = arm_clock
        self._now: datetime | None = None
        super().__init__()

    @property  # type: ignore[override]
    def now(self) -> datetime:
        assert self._now is not None
        return self._now

    @now.setter
    def now(self, value: datetime) -> None:
        if self._now is not None and value > self._now:
            self._arm_clock.now += (value - self._now).total_seconds()
        self._now = value


# The worlds of the running test: their SDK pollers wait on the fake clock until closed, so a world
# left open would keep a thread that every later join waits for.
OPEN: list[AzureWorld] = []


def close_open_worlds() -> None:
    while OPEN:
        OPEN.pop().close()


class AzureWorld(World):
    """One workspace (the fake ARM), the Azure ML backend built from settings, both health sources
    (the real ``LogsQueryClient`` against :class:`FakeLogs`, the real ``MetricsClient`` against
    :class:`FakeMetrics`; ``source`` is RETRAIN_HEALTH_SOURCE, ``logs_workspace`` False leaves Log
    Analytics unconfigured), and the service and reconciler on it (:class:`tests.world.World`)."""

    def __init__(
        self,
        tmp_path: Path,
        ledger: LedgerSpec | None = None,
        *,
        source: str = "logs",
        logs_workspace: bool = True,
        policy: Any = None,
        workspace: str = WS,
        **options: Any,
    ) -> None:
        """``workspace``: the workspace's name (another one than WS for a second environment's world)."""
        self.workspace = workspace
        self.workspace_id = WORKSPACE_ID.replace(f"/workspaces/{WS}", f"/workspaces/{workspace}")
        self.clock = self.retry_clock = FakeClock()
        self.now = WorldTime(self.retry_clock)
        self.arm = FakeArm(SUB, RG, workspace, clock=self.clock)
        OPEN.append(self)  # closed after the test (tests/conftest.py), even one that fails or forgets
        self.arm.add_compute("cpu-cluster")
        inputs = {"training_data": "mltable", "learning_rate": "number", "max_epochs": "integer"}
        self.arm.add_component("diabetes-retrain", "3", inputs=inputs)
        self.arm.add_data(DATASET, "1")
        self.arm.add_data(DATASET, "2")
        self.arm.add_model(MODEL, "3", tags={"r2_score": "0.52"})
        self.arm.add_endpoint(ENDPOINT, {"blue": 100})
        self.arm.add_deployment(ENDPOINT, "blue", model=(MODEL, "3"))
        self.settings = Settings.from_env(
            {
                "RETRAIN_BACKEND": "azureml",
                "AZUREML_SUBSCRIPTION_ID": SUB,
                "AZUREML_RESOURCE_GROUP": RG,
                "AZUREML_WORKSPACE_NAME": workspace,
                "RETRAIN_LOG_ANALYTICS_WORKSPACE_ID": LOGS_WORKSPACE if logs_workspace else "",
                "RETRAIN_HEALTH_SOURCE": source,
                "RETRAIN_METRICS_REGION": infra_metrics_region(),
                "RETRAIN_JOB_NAME_KEY": JOB_NAME_KEY,
            }
        )
        self.retry = RetryPolicy.from_settings(
            self.settings, sleep=self.clock.sleep, clock=self.clock, rng=random.Random(1)
        )
        self.actions = AzureMLActions.from_settings(
            self.settings, credential=FakeCredential(), retry=self.retry, transport=self.arm
        )
        self.logs = FakeLogs(LOGS_WORKSPACE, principal=self.arm.principal)
        # The metrics batch API holds the endpoints in the workspace's region; the caller is the app's
        # identity with the Monitoring Reader assignments infra/ makes.
        self.metrics = FakeMetrics(SUB, region=REGION, principal=self.arm.principal)
        self.source = source
        sources: dict[str, Any] = {
            "metrics": MonitorMetrics.from_settings(
                self.settings,
                region=self.settings.metrics_region,
                credential=FakeCredential(),
                retry=self.retry,
                transport=self.metrics,
            )
        }
        if logs_workspace:
            sources["logs"] = MonitorHealth.from_settings(
                self.settings, credential=FakeCredential(), retry=self.retry, transport=self.logs
            )
        # the rollouts' query guards: the real LogsQueryClient against the same fake Log Analytics API
        guard_queries = MonitorGuards.from_settings(
            self.settings, credential=FakeCredential(), retry=self.retry, transport=self.logs
        )
        self.ledger_spec = ledger or LedgerSpec("sqlite", str(tmp_path / "ledger.db"))
        super().__init__(
            self.ledger_spec,
            policy=policy or EXAMPLE_POLICY,
            actions=self.actions,
            health=sources,
            clock=self.now,
            workspaces=(self.settings.workspace_id,),
            health_source=self.settings.health_source,
            job_name_key=job_name_key(self.settings, tmp_path / "ledger.db"),
            guard_queries=guard_queries,
            scoring=self.actions,  # smoke tests invoke deployments through the fake ARM's scoring URIs
            registry=self.actions,  # the reconciler polls the registries downstream models pick up from
            batch_runs=self.actions,  # a batch comparison's jobs, through the fake ARM's batch endpoints
            **options,  # e.g. notifier: where the outbox's notifications go
        )
        self.clock = self.retry_clock  # here ``clock`` is the retries' clock, ``now`` the workers' time
        self.arm.scoring.counted = self._counted  # a deployment invoked directly serves a request too

    def trained_on(self, version: str, data: str) -> None:
        """Model version ``version`` came from a pipeline run that read ``DATASET:data`` (as the SDK submits it:
        the version's resource id)."""
        self.arm.add_job(
            f"train-{version}",
            experiment="diabetes-retrain",
            inputs={"training_data": self.arm.arm_id("data", DATASET, "versions", data)},
        )
        self.arm.add_model(MODEL, version, job_name=f"train-{version}")

    def champion_trained_on(self, data: str) -> None:
        """The champion, version 4, which the endpoint's live deployment serves, was trained on ``DATASET:data``."""
        self.trained_on("4", data)
        self.arm.add_deployment(ENDPOINT, "blue", model=(MODEL, "4"))

    def with_registry(self, role: str = "downstream") -> None:
        """The registry ``rbac.REGISTRY``, in a subscription of its own, and the app holding the roles infra/
        assigns an environment of ``role`` on it (``RETRAIN_REGISTRY_ROLE``)."""
        self.arm.principal = rbac.app(SUB, RG, self.workspace, registry_subscription=REGISTRY_SUB, registry_role=role)
        if rbac.REGISTRY.casefold() not in self.arm.registries.registries:
            self.arm.registries.add_registry(rbac.REGISTRY, REGISTRY_SUB, rbac.REGISTRY_GROUP)

    def serve_from_registry(self, version: str, tags: dict[str, str] | None = None) -> str:
        """The live deployment (blue) serves ``version`` of the model from registry ``rbac.REGISTRY`` (in a
        subscription of its own), the app holding the roles infra/ assigns a downstream environment; its id."""
        self.with_registry()
        ref = self.arm.registries.add_model(rbac.REGISTRY, MODEL, version, tags=tags)
        self.arm.deployments[(ENDPOINT, "blue")]["properties"]["model"] = ref
        return ref

    def _counted(self, endpoint: str, deployment: str, status: int) -> None:
        """A request a deployment answered through its scoring URI, in the health source, now."""
        kind = {200: "ok", 424: "model_errors", 408: "timeouts"}.get(status, "errors" if status >= 500 else "")
        if kind and endpoint == ENDPOINT:
            self.serve(self.now.now, deployment, **{kind: 1})

    def provisioned(self) -> None:
        """The fake clock moves on until the started operations are done (a deployment takes minutes),
        and the SDK's pollers of them, which wait for that clock, see them done and end."""
        self.arm.finish_operations()
        for thread in self.arm.lro_threads():
            thread.join(timeout=5)

    def close(self) -> None:
        """The test is over: the fake's operations report done, the SDK's pollers end."""
        self.arm.close()
        for thread in self.arm.lro_threads():
            thread.join(timeout=5)

    def serve(
        self,
        when: Any,
        deployment: str,
        *,
        ok: int = 0,
        errors: int = 0,
        model_errors: int = 0,
        timeouts: int = 0,
        ms: int = 40,
        source: str | None = None,
    ) -> None:
        """One minute of ``deployment``'s traffic at ``when``, in the health source the service reads
        (``source``: another one): ``errors`` 503s, ``model_errors`` 424s (the model answered 500),
        ``timeouts`` 408s, answering in ``ms``."""
        if (source or self.source) == "logs":
            self.logs.serve(
                when, ENDPOINT, deployment, ok=ok, errors=errors, model_errors=model_errors, timeouts=timeouts, ms=ms
            )
        else:
            rid = endpoint_resource_id(SUB, RG, self.workspace, ENDPOINT)
            self.metrics.serve(
                rid,
                when,
                deployment,
                ok=ok,
                errors=errors,
                model_errors=model_errors,
                timeouts=timeouts,
                p95_ms=float(ms),
            )

    def serve_endpoint(
        self, when: Any, requests: int, *, failing: dict[str, float] | None = None, ms: dict[str, int] | None = None
    ) -> dict[str, int]:
        """One minute of ``requests`` sent to the endpoint (no deployment named), routed as Azure ML
        routes them: split by the endpoint's live traffic, and its mirror traffic's share of them
        copied to the mirrored deployment ("Safe rollout for online endpoints"). Both sources report
        each deployment's requests under its name, mirrored ones too, with nothing that marks them
        mirrored (the supported-metrics reference lists `deployment`, `statusCode`,
        `statusCodeClass` and `modelStatusCode` as RequestsPerMinute's dimensions; the traffic log's
        columns have none either). ``failing``: the share of a deployment's requests its model fails
        (424); ``ms``: its latency. Returns the requests each deployment got."""
        props = self.arm.endpoints[ENDPOINT]["properties"]
        routed: dict[str, int] = {}
        for split in (props.get("traffic") or {}, props.get("mirrorTraffic") or {}):
            for deployment, percent in split.items():
                if percent:
                    routed[deployment] = routed.get(deployment, 0) + requests * int(percent) // 100
        for deployment, n in routed.items():
            bad = round(n * (failing or {}).get(deployment, 0.0))
            self.serve(when, deployment, ok=n - bad, model_errors=bad, ms=(ms or {}).get(deployment, 40))
        return routed

    def operator(self, action: str, reason: str) -> DecisionRecord:
        """An operator's ``action`` (promote, rollback, ...) on the model's rollout, asked with a function key."""
        from handlers.signals import OPERATOR, OperatorRequest, Trigger

        caller = (("kind", "function key"),)
        trigger = Trigger("http", f"req-{action}", f"ManualRequest.{action}", caller=caller, channel=OPERATOR)
        return self.worker.operator.handle(OperatorRequest(trigger, MODEL, action, reason))

    def promoted(self, r2: str = "0.71") -> tuple[DecisionRecord, DecisionRecord]:
        """A better candidate (``r2``) deployed, provisioned, at its first step, then promoted by an operator:
        its deploy and promote records."""
        [deploy] = self.deliver(self.finished_run(r2=r2)).decisions
        assert deploy.outcome == "submitted", deploy.reason
        self.provisioned()
        self.new_worker().reconcile()
        return deploy, self.operator("promote", "ship it")

    def decision(self, decision_id: str) -> DecisionRecord | None:
        return self.service.ledger.get_decision(decision_id)

    def completed(self, job: str, r2: float = 0.61) -> dict[str, Any]:
        """The job ``job`` (one the service submitted) completed, its step ``evaluate_model`` logging ``r2`` with
        MLflow: the RunCompleted event Azure ML sends, with the tags the job holds."""
        self.arm.set_job_status(job, "Completed")
        self.arm.add_step(job, "evaluate_model", metrics={"r2_score": r2})
        return run_event(run_id=job, tags=self.arm.jobs[job]["properties"]["tags"], topic=self.workspace_id)

    def finished_run(
        self,
        r2: str,
        run_id: str = "retrain-sklearn-regression-model-0123456789abcdef",
        *,
        register_step: bool = False,
        metrics: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        """The RunCompleted event of a retraining pipeline this service submitted, whose step
        ``evaluate_model`` logged ``r2`` with MLflow (as Microsoft's MLOps template does; the event
        carries no metric). ``register_step``: a ``register_model`` step registered the next version of
        the model from its own run (``mlflow.register_model``), as the template does."""
        tags = ours(MODEL, "re-0123456789abcdef")
        self.arm.add_job(run_id, experiment="diabetes-retrain", tags=tags)  # the tags the service submitted it with
        self.arm.add_step(run_id, "train_model", metrics={"training_loss": 0.2})
        self.step_run = self.arm.add_step(run_id, "evaluate_model", metrics={"r2_score": float(r2), **(metrics or {})})
        if register_step:
            registrar = self.arm.add_step(run_id, "register_model")
            version = str(max(int(v) for (n, v) in self.arm.models if n == MODEL) + 1)
            self.arm.add_model(MODEL, version, job_name=registrar, kind="custom_model")
        return run_event(run_id=run_id, tags=tags, topic=self.workspace_id)


__all__ = ["AzureWorld", "DiesAfterActing", "WorkerDied", "in_workspace"]
