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
from typing import TYPE_CHECKING

from function_app.settings import Settings

if TYPE_CHECKING:
    from handlers.ports import Actions, Health, Ledger
    from handlers.service import RetrainService

log = logging.getLogger(__name__)

APP_ROOT = Path(__file__).resolve().parent.parent

_lock = threading.Lock()
_service: RetrainService | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def resolve(path: Path) -> Path:
    """Relative paths in settings are relative to the app root (where main.py is)."""
    return path if path.is_absolute() else APP_ROOT / path


def make_ledger(settings: Settings) -> Ledger:
    if settings.ledger == "sqlite":
        from function_app.adapters.sqlite_ledger import SqliteLedger

        return SqliteLedger(resolve(settings.sqlite_path))
    from function_app.adapters.table_ledger import TableLedger

    ledger: Ledger = TableLedger.from_settings(settings)
    return ledger


def make_actions(settings: Settings) -> Actions:
    if settings.backend == "dryrun":
        from function_app.adapters.dryrun import DryRunActions

        return DryRunActions()
    from function_app.adapters.azureml import AzureMLActions  # type: ignore[import-not-found,unused-ignore]

    actions: Actions = AzureMLActions.from_settings(settings)
    return actions


def make_health(settings: Settings) -> Health:
    """The rollout health check: Log Analytics when a workspace is set, else "no data"."""
    if not settings.log_analytics_workspace_id:
        from function_app.adapters.monitor_health import NoHealthData

        return NoHealthData()
    from function_app.adapters.monitor_health import MonitorHealth

    return MonitorHealth.from_settings(settings)


def build_service(settings: Settings, clock: Callable[[], datetime] = utcnow) -> RetrainService:
    from handlers.policy import load_policy
    from handlers.service import RetrainService

    policy = load_policy(resolve(settings.policy_path))
    return RetrainService(
        policy,
        make_ledger(settings),
        make_actions(settings),
        clock,
        workspaces=[settings.workspace_id],
        allow_force=settings.allow_force,
        retention=timedelta(days=settings.retention_days),
        job_grace=timedelta(minutes=settings.job_grace_minutes),
        health=make_health(settings),
    )


def get_service() -> RetrainService:
    """The worker's one service, built on first use from the environment's settings."""
    global _service
    if _service is None:
        with _lock:
            if _service is None:
                _service = build_service(Settings.from_env())
                log.info("retrain service ready: %s", _service.actions.name)
    return _service


def set_service(service: RetrainService | None) -> None:
    """Install (or clear) the worker's service: the local host and tests build it themselves."""
    global _service
    with _lock:
        _service = service
