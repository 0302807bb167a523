"""Builds the service once per worker, lazily: nothing here runs at import time.

An import-time failure would break the indexing of every function, and the Azure ML SDK
costs about a second to import, so clients and the policy are built on first use.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, cast

from function_app.settings import Settings, job_name_key
from handlers.errors import InvalidInput

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from handlers.analysis import HealthSource
    from handlers.pickup import RegistryVersions
    from handlers.ports import Ledger, Notifier
    from handlers.replay import DeadLetterStore
    from handlers.retrainer import Audit, Retrainer
    from handlers.rollout.compare import BatchRuns
    from handlers.rollout.query_guards import GuardQueries
    from handlers.rollout.smoke import Scoring
    from handlers.workspace_ports import Actions

log = logging.getLogger(__name__)

APP_ROOT = Path(__file__).resolve().parent.parent

_lock = threading.Lock()
_retrainer: Retrainer | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def resolve(path: Path) -> Path:
    """Relative paths in settings are relative to the app root (where main.py is)."""
    return path if path.is_absolute() else APP_ROOT / path


def make_credential(settings: Settings) -> TokenCredential:
    """The worker's one Azure credential, which every adapter a build makes is given: the managed
    identity of AZURE_CLIENT_ID (``DefaultAzureCredential``), built on the first token a client asks
    for, so that nothing of azure-identity is imported on the dry-run and read-only paths; the same
    object for every build in the process, and for the telemetry exporter."""
    from function_app.adapters.clients import shared_credential

    return shared_credential(settings.client_id)


def make_ledger(settings: Settings, credential: TokenCredential) -> Ledger:
    if settings.ledger == "sqlite":
        from function_app.adapters.sqlite_ledger import SqliteLedger

        path = resolve(settings.sqlite_path)
        if path.is_dir():
            raise InvalidInput(
                f"RETRAIN_SQLITE_PATH={settings.sqlite_path} is a directory; give the ledger's file, e.g. {path / 'ledger.db'}"
            )
        return SqliteLedger(path)
    from function_app.adapters.table_ledger import TableLedger

    ledger: Ledger = TableLedger.from_settings(settings, credential)
    return ledger


def make_actions(settings: Settings, credential: TokenCredential) -> Actions:
    if settings.backend == "dryrun":
        from function_app.adapters.dryrun import DryRunActions

        return DryRunActions()
    from function_app.adapters.azureml import AzureMLActions  # type: ignore[import-not-found,unused-ignore]

    actions: Actions = AzureMLActions.from_settings(settings, credential=credential)
    return actions


def make_health(settings: Settings, credential: TokenCredential) -> dict[str, HealthSource]:
    """The rollout health sources by name: ``metrics`` (the endpoints' platform metrics, no setup;
    their region or regional endpoint from RETRAIN_METRICS_REGION / RETRAIN_METRICS_ENDPOINT) and
    ``logs`` (the traffic log in RETRAIN_LOG_ANALYTICS_WORKSPACE_ID). A source that is not configured
    is "no data" (:class:`NoHealthData`, which says why), so the policy's ``on_no_traffic`` decides.
    Each model reads its policy's ``health.source``, else RETRAIN_HEALTH_SOURCE. Nothing is imported
    from the monitor SDKs until a source reads."""
    from function_app.adapters.monitor_health import MonitorHealth, NoHealthData

    sources: dict[str, HealthSource] = {}
    if settings.metrics_region or settings.metrics_endpoint:
        from function_app.adapters.monitor_metrics import MonitorMetrics

        sources["metrics"] = MonitorMetrics.from_settings(
            settings, region=settings.metrics_region, endpoint=settings.metrics_endpoint, credential=credential
        )
    else:
        sources["metrics"] = NoHealthData(
            "no region for the platform metrics is configured (RETRAIN_METRICS_REGION: the Azure ML workspace's "
            "region, where its online endpoints are, not the function app's); no data",
        )
    if settings.log_analytics_workspace_id:
        sources["logs"] = MonitorHealth.from_settings(settings, credential=credential)
    else:
        sources["logs"] = NoHealthData()
    return sources


def make_guards(settings: Settings, credential: TokenCredential) -> GuardQueries:
    """Where the rollouts' query guards are read: Log Analytics / Application Insights, each guard's
    ``workspace`` or RETRAIN_LOG_ANALYTICS_WORKSPACE_ID. Nothing is imported until a guard is read."""
    from function_app.adapters.monitor_guards import MonitorGuards

    return MonitorGuards.from_settings(settings, credential=credential)


def make_notifier(settings: Settings, credential: TokenCredential) -> Notifier | None:
    """The Event Grid topic of RETRAIN_NOTIFY_TOPIC_ENDPOINT (None when empty: notifications are
    kept in the outbox, not sent). The client is built on the first publish."""
    if not settings.notify_topic_endpoint:
        return None
    from function_app.adapters.notifier import EventGridNotifier

    return EventGridNotifier.from_settings(settings, credential)


def build(
    settings: Settings,
    clock: Callable[[], datetime] = utcnow,
    *,
    credential: TokenCredential | None = None,
    serves: bool = True,
) -> Retrainer:
    """The service and the reconciler over one executor, from ``settings``, started as a worker that
    serves (:func:`handlers.wiring.start`: the ledger adopts the policy's models) unless ``serves`` is
    False (``retrain replay --dry-run``, which writes nothing); every adapter gets the one ``credential``
    (:func:`make_credential`, unless the caller, which needs it too, passes its own). The other read-only
    commands build theirs without starting it (:func:`explainer`, :func:`backtester`)."""
    from handlers.policy_file import load_policy
    from handlers.wiring import assemble, start

    job_key = job_name_key(settings, resolve(settings.sqlite_path))  # refused first: a setting is missing
    policy = load_policy(resolve(settings.policy_path))
    credential = credential or make_credential(settings)
    actions = make_actions(settings, credential)
    # the Azure ML backend invokes deployments for smoke tests (a dry run invokes nothing)
    scoring = None if settings.backend == "dryrun" else cast("Scoring", actions)
    worker = assemble(
        policy,
        make_ledger(settings, credential),
        actions,
        actions,
        clock,
        [settings.workspace_id],
        scoring=scoring,
        batch_runs=None if settings.backend == "dryrun" else cast("BatchRuns", actions),
        health=make_health(settings, credential),
        health_source=settings.health_source,
        guard_queries=make_guards(settings, credential),
        allow_force=settings.allow_force,
        retention=timedelta(days=settings.retention_days),
        job_grace=timedelta(minutes=settings.job_grace_minutes),
        notifier=make_notifier(settings, credential),
        notify_max_attempts=settings.notify_max_attempts,
        notify_max_age=timedelta(hours=settings.notify_max_age_hours),
        job_name_key=job_key,
        # the reconciler polls the registries downstream models pick up from (a dry run reads none)
        registry=None if settings.backend == "dryrun" else cast("RegistryVersions", actions),
    )
    return start(worker) if serves else worker


def audit(settings: Settings) -> Audit:
    """The audit trail of the configured ledger, to read: a SQLite file that is not there is said, not created."""
    from handlers.retrainer import Audit

    if settings.ledger == "sqlite" and not resolve(settings.sqlite_path).exists():
        raise InvalidInput(
            f"no ledger at {resolve(settings.sqlite_path)}: check RETRAIN_SQLITE_PATH (the service creates the file "
            "when it first records a decision)"
        )
    return Audit(make_ledger(settings, make_credential(settings)))


def _job_name_key_if_any(settings: Settings) -> bytes | None:
    """The key the service names its jobs with, when there is one (none is generated here)."""
    from function_app.settings import JOB_NAME_KEY_FILE

    if settings.job_name_key:
        return settings.job_name_key.encode()
    ledger_file = resolve(settings.sqlite_path)
    if settings.ledger == "sqlite" and (ledger_file.parent / JOB_NAME_KEY_FILE).exists():
        return job_name_key(settings, ledger_file)
    return None


def explainer(settings: Settings, policy: Path | None, with_ledger: bool) -> Retrainer:
    """The Retrainer ``retrain explain`` asks: the configured backend (read only: the candidate gate's
    facts), ``policy`` (default: RETRAIN_POLICY_PATH), the configured ledger ``with_ledger`` (read
    only), else an empty one in memory that nothing reads; the job-name key when there is one (none is
    generated)."""
    from function_app.adapters.sqlite_ledger import SqliteLedger
    from handlers.policy_file import load_policy
    from handlers.wiring import assemble

    credential = make_credential(settings)
    actions = make_actions(settings, credential)
    return assemble(
        load_policy(policy or resolve(settings.policy_path)),
        make_ledger(settings, credential) if with_ledger else SqliteLedger(":memory:"),
        actions,
        actions,
        utcnow,
        [settings.workspace_id],
        job_name_key=_job_name_key_if_any(settings),
    )


def backtester(settings: Settings, policy: Path) -> Retrainer:
    """The Retrainer ``retrain backtest`` asks: the draft ``policy``, the configured ledger (read only: a
    SQLite file that is not there is said, not created) and the dry-run backend (nothing acts, nothing
    in Azure ML is read)."""
    from function_app.adapters.dryrun import DryRunActions
    from handlers.policy_file import load_policy
    from handlers.wiring import assemble

    draft = load_policy(policy)  # the draft's problems first: they are what the command is about
    actions = DryRunActions()
    return assemble(draft, audit(settings).ledger, actions, actions, utcnow, [settings.workspace_id])


def deadletters(settings: Settings, credential: TokenCredential, prefix: str) -> DeadLetterStore:
    """The dead-lettered events in RETRAIN_DEADLETTER_CONTAINER, under ``prefix``."""
    from function_app.adapters.blob_deadletters import BlobDeadLetterStore

    return BlobDeadLetterStore.from_settings(settings, credential, prefix=prefix)


def get_retrainer() -> Retrainer:
    """The worker's one service and reconciler, built on first use from the environment's settings."""
    global _retrainer
    if _retrainer is None:
        with _lock:
            if _retrainer is None:
                settings = Settings.from_env()
                if settings.sign_in_warning:
                    log.error("SECURITY: %s", settings.sign_in_warning)
                _retrainer = build(settings)
                log.info("retrain service ready: %s", _retrainer.backend)
    return _retrainer


def current_retrainer() -> Retrainer | None:
    """The worker's service if it is built (None before its first use): nothing is built here."""
    return _retrainer


def set_retrainer(retrainer: Retrainer | None) -> None:
    """Install (or clear) the worker's service: the local host and tests build it themselves."""
    global _retrainer
    with _lock:
        _retrainer = retrainer
