"""Small builders for events, signals and Azure SDK errors, so tests say only what matters to them."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from handlers.policy_file import load_policy
from tests.conftest import REPO

if TYPE_CHECKING:
    from azure.core.exceptions import HttpResponseError

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # the tests' fixed now (tests.fakes.Clock starts there)

WORKSPACE = (
    "/subscriptions/{subscription-id}/resourceGroups/{resource-group-name}"
    "/providers/Microsoft.MachineLearningServices/workspaces/{workspace-name}"
)
ML = "Microsoft.MachineLearningServices."
MODEL = "sklearn_regression_model"  # the example policy's model (examples/policy.yaml)
EXAMPLE_POLICY = load_policy(REPO / "examples" / "policy.yaml")
SCOPE = frozenset({WORKSPACE.strip("/").lower()})  # the workspaces decide() acts for, normalised


def event(
    event_type: str, data: dict[str, Any], *, event_id: str | None = None, topic: str = WORKSPACE, subject: str = ""
) -> dict[str, Any]:
    return {
        "id": event_id or str(uuid.uuid4()),
        "topic": topic,
        "subject": subject,
        "eventType": event_type if "." in event_type else ML + event_type,
        "eventTime": "2026-11-25T10:00:00Z",
        "data": data,
        "dataVersion": "",
        "metadataVersion": "1",
    }


def cloud(e: dict[str, Any]) -> dict[str, Any]:
    """The same event in the CloudEvents 1.0 schema."""
    return {
        "specversion": "1.0",
        "id": e["id"],
        "source": e["topic"],
        "type": e["eventType"],
        "subject": e["subject"],
        "time": e["eventTime"],
        "data": e["data"],
    }


def drift_event(monitor: str = "myDriftMonitor", coefficient: float = 0.8, **kw: Any) -> dict[str, Any]:
    data = {
        "DataDriftId": "01d29aa4-e6a4-470a-9ef3-66660d21f8ef",
        "DataDriftName": monitor,
        "RunId": "run-1",
        "BaseDatasetId": "base-ds",
        "TargetDatasetId": "target-ds",
        "DriftCoefficient": coefficient,
        "StartTime": "2026-11-24T00:00:00+00:00",
        "EndTime": "2026-11-25T00:00:00+00:00",
    }
    return event("DatasetDriftDetected", data, **kw)


def breach_event(
    signal: str = "churn-data-drift",
    experiment: str = "churn-monitor",
    tags: dict[str, str] | None = None,
    status: str = "Completed",
    **kw: Any,
) -> dict[str, Any]:
    run_tags = {
        "azureml_modelmonitor_threshold_breached": f"The signal '{signal}' has failed due to one or more features violating metric thresholds. Details: feature 'tenure' psi 0.31 > 0.2",
        **(tags or {}),
    }
    data = {
        "experimentId": "e1",
        "experimentName": experiment,
        "runId": "monitor-run-1",
        "runType": None,
        "runTags": run_tags,
        "runProperties": {},
        "runStatus": status,
    }
    return event("RunStatusChanged", data, **kw)


def run_event(
    run_id: str = "retrain-run-1",
    experiment: str = "diabetes-retrain",
    tags: dict[str, str] | None = None,
    properties: dict[str, Any] | None = None,
    status: str | None = None,
    **kw: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "experimentId": "e1",
        "experimentName": experiment,
        "runId": run_id,
        "runType": None,
        "runTags": tags or {},
        "runProperties": properties or {},
    }
    if status is None:
        return event("RunCompleted", data, **kw)
    data["runStatus"] = status
    return event("RunStatusChanged", data, **kw)


def ours(model: str = MODEL, decision: str = "re-0123456789abcdef") -> dict[str, str]:
    """The tags this service puts on the jobs it submits."""
    return {
        "retrain_service": "retrain-service",
        "retrain_model": model,
        "retrain_decision": decision,
        "retrain_trigger": "DatasetDriftDetected:x",
    }


class Response:
    """Just what azure-core's HttpResponseError reads from a response."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.reason = "reason"
        self.headers = headers or {}
        self.request = None

    def text(self) -> str:
        return ""


def http_error(status: int, headers: dict[str, str] | None = None) -> HttpResponseError:
    """The error an Azure SDK raises for an HTTP ``status`` answer with ``headers``."""
    from azure.core.exceptions import HttpResponseError

    return HttpResponseError(message=f"status {status}", response=Response(status, headers))


# Signed-in callers (App Service authentication): two operators, and how a route records one of them.
ADA = "6f1e0000-0000-4000-8000-00000000ada0"
BOB = "6f1e0000-0000-4000-8000-0000000000b0"
CAROL = "6f1e0000-0000-4000-8000-0000000ca401"  # a third person: the approver role
BOB_CALLER = (("kind", "principal"), ("id", BOB), ("name", "bob@c"), ("roles", "Retrain.Operator"))
# Ada's token as Azure sees it when she submits a run herself (the Azure CLI's client id; a person's claims)
ADA_TOKEN = {
    "oid": ADA,
    "upn": "Ada@Contoso.example",
    "name": "Ada Lovelace",
    "appid": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
    "idtyp": "user",
}


def signed(oid: str, name: str, *roles: str) -> dict[str, str]:
    """The headers App Service adds for a signed-in principal with the operator role and ``roles``."""
    claims = [{"typ": "roles", "val": r} for r in ("Retrain.Operator", *roles)] + [{"typ": "name", "val": name}]
    encoded = base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()
    return {"X-MS-CLIENT-PRINCIPAL": encoded, "X-MS-CLIENT-PRINCIPAL-NAME": name, "X-MS-CLIENT-PRINCIPAL-ID": oid}


def signed_in(monkeypatch: Any) -> None:
    """App Service authentication on, as the setting and the platform say it (pytest's ``monkeypatch``)."""
    monkeypatch.setenv("RETRAIN_APP_SERVICE_AUTH", "true")
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")


STORAGE = "/subscriptions/{subscription-id}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/mydata"


def blob_event(
    blob: str, *, container: str = "training", account: str = STORAGE, event_id: str | None = None
) -> dict[str, Any]:
    """A storage account's BlobCreated (Event Grid schema; :func:`cloud` for CloudEvents), as its system topic sends it."""
    name = account.rsplit("/", 1)[-1]
    data = {
        "api": "PutBlob",
        "eTag": "0x8D96060BDA19D9D",
        "contentType": "text/csv",
        "contentLength": 1024,
        "blobType": "BlockBlob",
        "url": f"https://{name}.blob.core.windows.net/{container}/{blob}",
        "sequencer": "0000000000000000000000000000B00D0000000005b058d3",
    }
    subject = f"/blobServices/default/containers/{container}/blobs/{blob}"
    return event("Microsoft.Storage.BlobCreated", data, event_id=event_id, topic=account, subject=subject)


def promotion_event(
    *,
    source: str = WORKSPACE,
    registry: str = "mlreg-shared",
    model: str = MODEL,
    version: str = "4",
    outcome: str = "shared",
    event_id: str = "n-promotion-1",
) -> dict[str, Any]:
    """An upstream (dev) service's promotion notification as its topic delivers it (CloudEvents 1.0, the
    shape function_app/adapters/notifier.py publishes: the promote record as data, its share in details)."""
    shared = {"registry": registry, "id": f"azureml://registries/{registry}/models/{model}/versions/{version}"}
    record = {"id": "pr-0123", "model": model, "action": "promote", "outcome": "submitted"}
    return {
        "specversion": "1.0",
        "id": event_id,
        "type": "retrain.decision.promote.submitted",
        "source": source,
        "subject": model,
        "data": {**record, "details": {"shared": {**shared, "outcome": outcome}}},
    }


def with_retrain_on(on: dict[str, Any], model: str = MODEL, policy: Any = None) -> Any:
    """``policy`` (the example's) with ``models.<model>.retrain.on`` set to ``on``, validated as a file is."""
    return with_retrain({"on": on}, model, policy)


def with_retrain(keys: dict[str, Any], model: str = MODEL, policy: Any = None) -> Any:
    """``policy`` (the example's) with ``keys`` set in ``models.<model>.retrain``, validated as a file is."""
    from handlers.policy import Policy

    raw = (policy or EXAMPLE_POLICY).model_dump()
    raw["models"][model]["retrain"].update(keys)
    return Policy.model_validate(raw)


# The example model retrained on new data (retrain.on.data): a blob under training/diabetes/ or anywhere in labels/
# of STORAGE, one retrain once a burst has settled for 5 minutes (tests/test_new_data.py, tests/test_attacks.py).
NEW_DATA = with_retrain_on(
    {
        "data": {
            "blobs": [
                {"account": STORAGE, "container": "training", "prefix": "diabetes/"},
                {"account": STORAGE, "container": "labels", "prefix": ""},
            ],
            "settle": "5m",
        }
    }
)


def with_environment(environment: dict[str, Any] | None, policy: Any = None, model: str = MODEL) -> Any:
    """``policy`` (the example's) with ``models.<model>.environment`` set (None: removed), validated as a file is."""
    from handlers.policy import Policy

    raw = (policy or EXAMPLE_POLICY).model_dump()
    raw["models"][model]["environment"] = environment
    return Policy.model_validate(raw)


def with_classes(classes: dict[str, str], model: str = MODEL, policy: Any = None, **retrain: Any) -> Any:
    """``policy`` (the example's) with ``models.<model>.drift`` listening to the signals ``classes`` names,
    each of that class, and ``retrain`` keys set (``worthiness``, ``daily_budget``), validated as a file is."""
    from handlers.policy import Policy

    raw = (policy or EXAMPLE_POLICY).model_dump()
    raw["models"][model]["drift"].update(signals=sorted(classes), classes=classes)
    raw["models"][model]["retrain"].update(retrain)
    return Policy.model_validate(raw)


def gated_run_plan(run_id: str, step: str | None = None, *, source: str = "mlflow", n: int = 8) -> Any:
    """The deploy plan of the finished run ``run_id`` of the example model to its endpoint, gated on r2_score
    (floor 0.4, margin 0.01) read from ``source`` (``step``: that pipeline step's MLflow run); ``n`` numbers its
    deployment and decision."""
    from handlers.gate_rules import GateRule
    from handlers.plans import DeployPlan

    return DeployPlan(
        model=MODEL,
        endpoint="diabetes-endpoint",  # the example policy's
        deployment=f"sklearn-regressio-{n}",
        run_id=run_id,
        version=None,
        source="run",
        tags={"retrain_decision": f"de-{n}"},
        gate=GateRule(metric="r2_score", floor=0.4, margin=0.01, source=source, step=step),
    )


def gated_version_plan(version: str, *, source: str) -> Any:
    """The deploy plan of a manual request for version ``version`` of the example model (no run) to its
    endpoint, gated on r2_score read from ``source``, starting on one instance."""
    from handlers.gate_rules import GateRule
    from handlers.plans import DeployPlan

    return DeployPlan(
        model=MODEL,
        endpoint="diabetes-endpoint",  # the example policy's
        deployment=f"sklearn-regressio-{version}",
        run_id=None,
        version=version,
        source="manual",
        tags={"retrain_decision": f"de-{version}"},
        gate=GateRule(metric="r2_score", source=source),
        instance_count=1,
    )


def training_plan(kind: str, value: str) -> Any:
    """A plan for the example workspace's pipeline whose training data is ``value`` (of type ``kind``), as a
    test hands it to the Azure ML backend directly."""
    from handlers.plans import JobPlan

    return JobPlan(
        name="retrain-x-1",
        model=MODEL,
        component="diabetes-retrain:3",
        experiment="e",
        compute="cpu-cluster",
        inputs={"training_data": {"type": kind, "value": value, "from": "policy"}},
        tags={},
        display_name="x",
    )
