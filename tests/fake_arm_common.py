"""What the fake ARM's modules share (:mod:`tests.fake_arm` and the resources it answers for: assets,
jobs, MLflow, online endpoints, schedules): its hosts and api-versions, the record of a call, the
``systemData`` ARM writes, the errors in the MLflow API's shape and the fake clock. The HTTP plumbing
every fake shares is :mod:`tests.fake_http`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from requests.structures import CaseInsensitiveDict

from tests.fake_http import Refusal

ARM_HOST = "management.azure.com"
PROVIDER = "Microsoft.MachineLearningServices"
CREATED = "2026-11-20T09:00:00.000000+00:00"

# The api-versions the installed azure-ai-ml (1.35.2) sends, per resource (found by driving it).
API_VERSIONS: dict[str, frozenset[str]] = {
    "workspace": frozenset({"2024-10-01-preview"}),
    "computes": frozenset({"2023-08-01-preview"}),
    "components": frozenset({"2024-01-01-preview"}),
    "data": frozenset({"2023-04-01-preview"}),
    "datastores": frozenset({"2024-10-01-preview", "2024-01-01-preview", "2023-04-01-preview"}),
    "jobs": frozenset({"2024-01-01-preview"}),
    "jobCancel": frozenset({"2023-04-01-preview"}),  # azure-ai-ml's jobs.begin_cancel
    "models": frozenset({"2023-08-01-preview"}),
    "onlineEndpoints": frozenset({"2022-02-01-preview", "2023-04-01-preview"}),
    "deployments": frozenset({"2023-04-01-preview"}),
    "operations": frozenset({"2023-04-01-preview"}),
    "schedules": frozenset({"2023-06-01-preview"}),
    "batchEndpoints": frozenset({"2023-10-01", "2024-01-01-preview"}),  # batch_deployments reads it too
    "batchDeployments": frozenset({"2024-01-01-preview"}),
}


def system_data(claims: dict[str, Any], at: str) -> dict[str, Any]:
    """The ``systemData`` ARM records on a resource created with a token of ``claims`` (ARM common
    types, SystemData): a person by their sign-in name, type ``User``; an application by its client
    id, type ``ManagedIdentity`` for a managed identity's token (it carries ``xms_mirid``), else
    ``Application``."""
    if claims.get("idtyp") == "user" or "upn" in claims:
        who, kind = str(claims.get("upn") or claims.get("unique_name") or claims.get("oid")), "User"
    else:
        who = str(claims.get("appid") or claims.get("azp") or claims.get("oid"))
        kind = "ManagedIdentity" if "xms_mirid" in claims else "Application"
    return {
        "createdAt": at,
        "createdBy": who,
        "createdByType": kind,
        "lastModifiedAt": at,
        "lastModifiedBy": who,
        "lastModifiedByType": kind,
    }


def job_system_data(claims: dict[str, Any], at: str) -> dict[str, Any]:
    """The ``systemData`` of a job: as :func:`system_data`, but a person is named by their display name, as
    Azure ML records a job's creator (``az ml job create`` prints ``"created_by": "<full name>"`` with
    ``created_by_type: User``; Az PowerShell's ``Get-AzMLWorkspaceJob`` help shows ``UserName (Example)``, ``User``)."""
    data = system_data(claims, at)
    if data["createdByType"] == "User" and claims.get("name"):
        data["createdBy"] = data["lastModifiedBy"] = str(claims["name"])
    return data


def run_history_user(claims: dict[str, Any]) -> dict[str, Any]:
    """Run history's ``createdBy`` (the REST client's ``User``: ``userObjectId`` "a user or service principal's
    object ID", ``userName`` "a user's full name or a service principal's app ID", ``upn`` "a user's Principal
    name") for a run created with a token of ``claims``."""
    person = claims.get("idtyp") == "user" or "upn" in claims
    tenant = str(claims.get("tid") or "00000000-0000-0000-0000-0000000000bb")
    return {
        "userObjectId": claims.get("oid"),
        "userPuId": None,
        "userIdp": None,
        "userAltSecId": None,
        "userIss": f"https://sts.windows.net/{tenant}/",
        "userTenantId": tenant,
        "userName": claims.get("name") if person else claims.get("appid"),
        "upn": (claims.get("upn") or claims.get("unique_name")) if person else None,
    }


# --------------------------------------------------------------------------- clock


class FakeClock:
    """Epoch seconds that move only when something waits (a recorded sleep) or a fault says so.
    A thread can wait for it (:meth:`wait_until`): the SDK's pollers wait for the fake's time."""

    def __init__(self, start: float = 1_795_000_000.0) -> None:
        self._moved = threading.Condition()
        self._now = start
        self.slept: list[float] = []

    @property
    def now(self) -> float:
        return self._now

    @now.setter
    def now(self, value: float) -> None:
        with self._moved:
            self._now = value
            self._moved.notify_all()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def wait_until(self, when: float, released: Callable[[], bool], real_timeout: float) -> None:
        """Block until the clock reaches ``when`` or ``released()``, at most ``real_timeout`` real seconds."""
        with self._moved:
            self._moved.wait_for(lambda: self._now >= when or released(), timeout=real_timeout)


# --------------------------------------------------------------------------- requests and faults


@dataclass
class Call:
    method: str
    url: str
    path: str  # below the workspace, e.g. "jobs/retrain-x"; or the full path outside it
    api_version: str | None
    query: dict[str, str]
    headers: CaseInsensitiveDict[str]
    body: Any
    status: int = 0


class MlflowAnswer(Refusal):
    """An error as the MLflow REST API spells it: ``{"error_code": ..., "message": ...}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message, body={"error_code": code, "message": message})
