"""The policy's ``retrain.on`` section: what else starts a model's retraining besides drift, alerts
and people (docs/policy.md, "New data and upstream runs").

``on.data.blobs``: new blobs in the storage containers and prefixes named here (BlobCreated events of the
account's Event Grid system topic), coalesced into one retrain per burst by ``on.data.settle``.
"""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import Field, field_validator

from handlers.policy_base import Duration, Strict

_ACCOUNT = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Storage/storageAccounts/[a-z0-9]{3,24}$",
    re.IGNORECASE,
)
_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


class BlobSource(Strict):
    """One place new training data lands: a container of a storage account, and a prefix of its blobs."""

    account: str = Field(description="the storage account's resource id (its Event Grid system topic's source)")
    container: str
    prefix: str = Field(default="", description="blob names that start with this; '' is the whole container")

    @field_validator("account")
    @classmethod
    def _account(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not _ACCOUNT.match(value):
            raise ValueError(
                f"{value!r} is not a storage account resource id; write "
                "'/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.Storage/storageAccounts/<name>'"
            )
        return value

    @field_validator("container")
    @classmethod
    def _container(cls, value: str) -> str:
        if not _CONTAINER.match(value):
            raise ValueError(
                f"{value!r} is not a blob container name; use 3-63 lower-case letters, digits and single dashes"
            )
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value.startswith("/"):
            raise ValueError(f"prefix {value!r} starts with '/'; blob names do not: write {value.lstrip('/')!r}")
        return value


class DataRule(Strict):
    """``retrain.on.data``: new blobs start one retrain after a burst has settled."""

    blobs: list[BlobSource] = Field(min_length=1)
    settle: Duration = Field(
        default=timedelta(minutes=5),
        description="a burst of new blobs starts one retrain once no new blob has come for this long",
    )

    @field_validator("settle")
    @classmethod
    def _settle(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=30) <= value <= timedelta(days=1):
            raise ValueError(
                "settle must be from 30s to 1d, e.g. '5m': a burst's retrain starts that long after its last blob "
                "(the reconciler looks on each pass, so it starts within one reconcile interval after that)"
            )
        return value


class OnRule(Strict):
    """``retrain.on``: what else starts the model's retraining (new data)."""

    data: DataRule | None = None
