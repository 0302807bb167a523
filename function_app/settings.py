"""Typed settings, read from the environment (app settings in Azure, local.settings.json locally).

``SETTINGS`` is the one list of every setting the code reads: its name, default and meaning.
Infra (Bicep) and ``local.settings.json.example`` are checked against it by a test.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# The placeholders of Microsoft's published sample events: the embedded local defaults name this
# workspace so that the samples in tests/data/events route to the example policy without Azure.
SAMPLE_SUBSCRIPTION = "{subscription-id}"
SAMPLE_RESOURCE_GROUP = "{resource-group-name}"
SAMPLE_WORKSPACE = "{workspace-name}"


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    help: str
    azure: bool = True  # set by infra in Azure (False: local or test only)


SETTINGS: tuple[Setting, ...] = (
    Setting("RETRAIN_POLICY_PATH", "examples/policy.yaml", "path of the policy file, relative to the app root"),
    Setting("RETRAIN_LEDGER", "sqlite", "ledger backend: 'sqlite' (local default) or 'table' (Azure Table Storage)"),
    Setting("RETRAIN_SQLITE_PATH", ".retrain/ledger.db", "SQLite ledger file, for RETRAIN_LEDGER=sqlite", azure=False),
    Setting(
        "RETRAIN_TABLES_CONNECTION", None, "storage connection string for the Table ledger (local/test)", azure=False
    ),
    Setting("RETRAIN_TABLES_ACCOUNT_URL", None, "https://ACCOUNT.table.core.windows.net, used with managed identity"),
    Setting("RETRAIN_TABLE_PREFIX", "retrain", "prefix of the ledger's table names"),
    Setting("RETRAIN_RETENTION_DAYS", "30", "days to keep event and decision records"),
    Setting("RETRAIN_BACKEND", "dryrun", "'dryrun' renders what would be submitted; 'azureml' acts on the workspace"),
    Setting(
        "RETRAIN_DEADLINE_SECONDS",
        "25",
        "time budget of one delivery, retries included; under 30 (Event Grid waits 30 s). A webhook batch "
        "answers after 80% of it, leaving the events not reached to the redelivery",
    ),
    Setting("RETRAIN_ALLOW_FORCE", "false", "whether manual requests may send force=true to pass cooldown/in-flight"),
    Setting(
        "RETRAIN_JOB_GRACE_MINUTES",
        "15",
        "minutes a submitted retraining job may run before the reconciler asks whether its end event was missed",
    ),
    Setting("RETRAIN_RECONCILE_SCHEDULE", "0 */5 * * * *", "NCRONTAB schedule of the reconciler timer"),
    Setting("RETRAIN_DEADLETTER_CONTAINER", "deadletter", "blob container that Event Grid dead-letters into"),
    Setting("RETRAIN_BLOB_ACCOUNT_URL", None, "https://ACCOUNT.blob.core.windows.net for dead-letter replay"),
    Setting(
        "RETRAIN_BLOB_CONNECTION", None, "storage connection string for dead-letter replay (local/test)", azure=False
    ),
    Setting("AZUREML_SUBSCRIPTION_ID", SAMPLE_SUBSCRIPTION, "subscription of the Azure ML workspace"),
    Setting("AZUREML_RESOURCE_GROUP", SAMPLE_RESOURCE_GROUP, "resource group of the Azure ML workspace"),
    Setting("AZUREML_WORKSPACE_NAME", SAMPLE_WORKSPACE, "name of the Azure ML workspace"),
    Setting("AZURE_CLIENT_ID", None, "client id of the user-assigned managed identity"),
    Setting(
        "RETRAIN_LOG_ANALYTICS_WORKSPACE_ID",
        None,
        "Log Analytics workspace (resource id, or Workspace ID GUID) the rollout health check queries, and the "
        "rollouts' query guards that name no workspace; empty: no health data, the policy's on_no_traffic decides",
    ),
    Setting(
        "RETRAIN_HEALTH_SOURCE",
        "metrics",
        "where rollout health comes from unless the policy says: 'metrics' (platform metrics, no setup) or 'logs'",
    ),
    Setting(
        "RETRAIN_METRICS_REGION",
        None,
        "Azure region of the Azure ML workspace (its online endpoints are in it; not the function app's), "
        "for the metrics batch API's regional endpoint",
    ),
    Setting("RETRAIN_METRICS_ENDPOINT", None, "override of the regional metrics endpoint (sovereign clouds)"),
    Setting(
        "RETRAIN_APP_SERVICE_AUTH",
        "false",
        "'true' when App Service authentication (Entra ID sign-in) fronts the app: manual requests then need a "
        "signed-in principal with RETRAIN_OPERATOR_ROLE, and the principal is recorded",
    ),
    Setting("RETRAIN_OPERATOR_ROLE", "Retrain.Operator", "the app role a signed-in caller needs for manual requests"),
    Setting(
        "RETRAIN_NOTIFY_TOPIC_ENDPOINT",
        None,
        "Event Grid custom topic endpoint the decisions are published to as CloudEvents; empty: notifications off",
    ),
    Setting(
        "RETRAIN_NOTIFY_TOPIC_KEY",
        None,
        "access key for the notification topic (a local receiver or tests); empty: the managed identity",
        azure=False,
    ),
    Setting(
        "RETRAIN_NOTIFY_MAX_ATTEMPTS",
        "10",
        "attempts the topic may refuse a notification before it is dead-lettered in the ledger",
    ),
    Setting(
        "RETRAIN_NOTIFY_MAX_AGE_HOURS",
        "24",
        "hours after its decision that a notification not sent yet is dead-lettered at its next failure",
    ),
    Setting(
        "RETRAIN_JOB_NAME_KEY",
        None,
        "secret key the retraining jobs are named with (HMAC-SHA256, at least 32 characters), so that no workspace "
        "user can predict a job's name; generated by the deployment, required with RETRAIN_LEDGER=table; empty "
        "with SQLite: a key file job-name.key beside the ledger, generated once",
    ),
    Setting(
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        None,
        "Application Insights connection string: traces and metrics through OpenTelemetry; empty: telemetry off",
    ),
)

_DEFAULTS = {s.name: s.default for s in SETTINGS}
MIN_JOB_NAME_KEY = 32  # characters of RETRAIN_JOB_NAME_KEY (the deployment generates 64 hex digits)
JOB_NAME_KEY_FILE = "job-name.key"  # beside the SQLite ledger, when RETRAIN_JOB_NAME_KEY is empty


EVENT_GRID_WAITS = 30.0  # seconds Event Grid waits for a delivery's answer (AZURE-FACTS.md)


def _positive(text: str) -> float:
    """The number in ``text``, or -1 when it is not one (reported by the caller)."""
    try:
        return float(text)
    except ValueError:
        return -1.0


def _bool(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    policy_path: Path
    ledger: str
    sqlite_path: Path
    tables_connection: str | None
    tables_account_url: str | None
    table_prefix: str
    retention_days: int
    job_grace_minutes: float
    backend: str
    deadline_seconds: float
    allow_force: bool
    subscription_id: str
    resource_group: str
    workspace_name: str
    client_id: str | None
    deadletter_container: str
    blob_account_url: str | None
    blob_connection: str | None = None
    log_analytics_workspace_id: str | None = None
    health_source: str = "metrics"
    metrics_region: str | None = None
    metrics_endpoint: str | None = None
    app_service_auth: bool = False
    operator_role: str = "Retrain.Operator"
    # App Service sets WEBSITE_AUTH_ENABLED=True in the app's environment while its authentication
    # (sign-in) is on; only then does the platform strip client-sent X-MS-CLIENT-PRINCIPAL* headers.
    platform_sign_in: bool = False
    notify_topic_endpoint: str | None = None
    notify_topic_key: str | None = None
    notify_max_attempts: int = 10
    notify_max_age_hours: float = 24.0
    job_name_key: str | None = None

    @property
    def workspace_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace_name}"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = source.get(name)
            return value if value not in (None, "") else _DEFAULTS[name]

        def req(name: str) -> str:
            value = get(name)
            if value is None:
                raise ValueError(f"setting {name} is required")
            return value

        problems: list[str] = []
        ledger = req("RETRAIN_LEDGER").lower()
        if ledger not in ("sqlite", "table"):
            problems.append(f"RETRAIN_LEDGER={ledger!r}: use 'sqlite' or 'table'")
        backend = req("RETRAIN_BACKEND").lower()
        if backend not in ("dryrun", "azureml"):
            problems.append(f"RETRAIN_BACKEND={backend!r}: use 'dryrun' or 'azureml'")
        if ledger == "table" and not (get("RETRAIN_TABLES_CONNECTION") or get("RETRAIN_TABLES_ACCOUNT_URL")):
            problems.append(
                "RETRAIN_LEDGER=table needs RETRAIN_TABLES_ACCOUNT_URL (managed identity) "
                "or RETRAIN_TABLES_CONNECTION (a connection string, e.g. UseDevelopmentStorage=true)"
            )
        numbers: dict[str, float] = {}
        for name in (
            "RETRAIN_RETENTION_DAYS",
            "RETRAIN_DEADLINE_SECONDS",
            "RETRAIN_JOB_GRACE_MINUTES",
            "RETRAIN_NOTIFY_MAX_ATTEMPTS",
            "RETRAIN_NOTIFY_MAX_AGE_HOURS",
        ):
            numbers[name] = _positive(req(name))
            if numbers[name] <= 0:
                problems.append(f"{name}={get(name)!r}: must be a positive number")
                numbers[name] = float(_DEFAULTS[name] or 1)
        if numbers["RETRAIN_DEADLINE_SECONDS"] >= EVENT_GRID_WAITS:
            problems.append(
                f"RETRAIN_DEADLINE_SECONDS={get('RETRAIN_DEADLINE_SECONDS')!r}: must be under {EVENT_GRID_WAITS:g} "
                "(Event Grid waits 30 s for an answer, then counts the delivery failed); 25 leaves room for the reply"
            )
        health_source = req("RETRAIN_HEALTH_SOURCE").lower()
        if health_source not in ("metrics", "logs"):
            problems.append(f"RETRAIN_HEALTH_SOURCE={health_source!r}: use 'metrics' or 'logs'")
        region, metrics_at = get("RETRAIN_METRICS_REGION"), get("RETRAIN_METRICS_ENDPOINT")
        if region and not region.replace(" ", "").isalnum():
            problems.append(
                f"RETRAIN_METRICS_REGION={region!r}: give the online endpoints' Azure region, e.g. westeurope"
            )
        if metrics_at and not metrics_at.startswith("https://"):
            problems.append(
                f"RETRAIN_METRICS_ENDPOINT={metrics_at!r}: an https URL like https://westeurope.metrics.monitor.azure.com"
            )
        workspace = (req("AZUREML_SUBSCRIPTION_ID"), req("AZUREML_RESOURCE_GROUP"), req("AZUREML_WORKSPACE_NAME"))
        if backend == "azureml" and any(part.startswith("{") for part in workspace):
            problems.append(
                "RETRAIN_BACKEND=azureml needs AZUREML_SUBSCRIPTION_ID, AZUREML_RESOURCE_GROUP and "
                "AZUREML_WORKSPACE_NAME set to a real workspace"
            )
        topic = get("RETRAIN_NOTIFY_TOPIC_ENDPOINT")
        if topic and not topic.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            problems.append(
                f"RETRAIN_NOTIFY_TOPIC_ENDPOINT={topic!r}: the topic's https endpoint, like "
                "https://TOPIC.REGION-1.eventgrid.azure.net/api/events (http only for a local receiver)"
            )
        job_key = get("RETRAIN_JOB_NAME_KEY")
        if job_key is not None and len(job_key.strip()) < MIN_JOB_NAME_KEY:
            problems.append(
                f"RETRAIN_JOB_NAME_KEY is {len(job_key.strip())} characters: use a random secret of at least "
                f'{MIN_JOB_NAME_KEY} (e.g. python -c "import secrets; print(secrets.token_hex(32))")'
            )
        if problems:
            raise ValueError("invalid settings:\n  " + "\n  ".join(problems))
        return cls(
            policy_path=Path(req("RETRAIN_POLICY_PATH")),
            ledger=ledger,
            sqlite_path=Path(req("RETRAIN_SQLITE_PATH")),
            tables_connection=get("RETRAIN_TABLES_CONNECTION"),
            tables_account_url=get("RETRAIN_TABLES_ACCOUNT_URL"),
            table_prefix=req("RETRAIN_TABLE_PREFIX"),
            retention_days=int(numbers["RETRAIN_RETENTION_DAYS"]),
            job_grace_minutes=numbers["RETRAIN_JOB_GRACE_MINUTES"],
            backend=backend,
            deadline_seconds=numbers["RETRAIN_DEADLINE_SECONDS"],
            allow_force=_bool(get("RETRAIN_ALLOW_FORCE")),
            subscription_id=workspace[0],
            resource_group=workspace[1],
            workspace_name=workspace[2],
            client_id=get("AZURE_CLIENT_ID"),
            deadletter_container=req("RETRAIN_DEADLETTER_CONTAINER"),
            blob_account_url=get("RETRAIN_BLOB_ACCOUNT_URL"),
            blob_connection=get("RETRAIN_BLOB_CONNECTION"),
            log_analytics_workspace_id=get("RETRAIN_LOG_ANALYTICS_WORKSPACE_ID"),
            health_source=health_source,
            metrics_region=get("RETRAIN_METRICS_REGION"),
            metrics_endpoint=get("RETRAIN_METRICS_ENDPOINT"),
            app_service_auth=_bool(get("RETRAIN_APP_SERVICE_AUTH")),
            platform_sign_in=_bool(source.get("WEBSITE_AUTH_ENABLED")),
            operator_role=req("RETRAIN_OPERATOR_ROLE"),
            notify_topic_endpoint=topic,
            notify_topic_key=get("RETRAIN_NOTIFY_TOPIC_KEY"),
            notify_max_attempts=max(1, int(numbers["RETRAIN_NOTIFY_MAX_ATTEMPTS"])),
            notify_max_age_hours=numbers["RETRAIN_NOTIFY_MAX_AGE_HOURS"],
            job_name_key=None if job_key is None else job_key.strip(),
        )

    @property
    def sign_in_warning(self) -> str | None:
        """Said loudly at start-up when the app is told sign-in fronts it but the platform says it does not."""
        if self.app_service_auth and not self.platform_sign_in:
            return (
                "RETRAIN_APP_SERVICE_AUTH=true but App Service authentication is off (WEBSITE_AUTH_ENABLED is not "
                "True): any function key holder could send X-MS-CLIENT-PRINCIPAL headers and claim any identity, so "
                "they are not trusted and every manual request is refused (403). Turn sign-in on (azd env set "
                "RETRAIN_AUTH_CLIENT_ID, azd provision) or set RETRAIN_APP_SERVICE_AUTH=false"
            )
        return None

    def summary(self) -> dict[str, object]:
        """What /api/config shows (behind a key): choices and names, never secrets (no connection strings)."""
        return {
            "policy": str(self.policy_path),
            "ledger": self.ledger,
            "backend": self.backend,
            "workspace": self.workspace_id,
            "deadline_seconds": self.deadline_seconds,
            "retention_days": self.retention_days,
            "identity": "user-assigned" if self.client_id else "default",
            "health": {
                "source": self.health_source,
                "metrics": "configured" if self.metrics_region or self.metrics_endpoint else "none",
                "logs": "configured" if self.log_analytics_workspace_id else "none",
            },
            "notifications": "configured" if self.notify_topic_endpoint else "off",
        }


def job_name_key(settings: Settings, sqlite_file: Path) -> bytes:
    """The secret the retraining jobs are named with (:mod:`handlers.jobnames`): RETRAIN_JOB_NAME_KEY,
    or else (the SQLite ledger: local runs) the key file :data:`JOB_NAME_KEY_FILE` beside the ledger
    file ``sqlite_file``, generated on first use (64 random hex digits, mode 0600) and read after that,
    so that the service names a redelivered event's job as it did the first time."""
    if settings.job_name_key:
        return settings.job_name_key.encode()
    if settings.ledger != "sqlite":
        raise ValueError(
            "invalid settings:\n  RETRAIN_JOB_NAME_KEY is required with RETRAIN_LEDGER=table: the secret the "
            "retraining jobs are named with (the deployment generates it: infra/hooks/preprovision; by hand: azd env "
            'set RETRAIN_JOB_NAME_KEY $(python -c "import secrets; print(secrets.token_hex(32))") and provision)'
        )
    return _key_file(sqlite_file.parent / JOB_NAME_KEY_FILE)


def _key_file(path: Path) -> bytes:
    """The key in ``path``, written first if there is none: to a private temporary file that is then
    linked into place, so that a worker starting at the same moment reads a whole key or writes its own
    and finds this one (a link never replaces a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secrets.token_hex(32) + "\n")
            with contextlib.suppress(FileExistsError):  # another worker's key is the key
                os.link(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    key = path.read_text(encoding="ascii", errors="replace").strip()
    if len(key) < MIN_JOB_NAME_KEY:
        raise ValueError(
            f"{path} holds no job-name key (at least {MIN_JOB_NAME_KEY} characters); delete it and a new one is "
            "generated (jobs submitted under the old key are no longer adopted by a redelivery)"
        )
    return key.encode()
