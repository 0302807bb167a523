"""The policy's ``retrain.on`` section: what else starts a model's retraining besides drift, alerts
and people (docs/policy.md, "New data and upstream runs").

``on.data.blobs``: new blobs in the storage containers and prefixes named here (BlobCreated events of the
account's Event Grid system topic), coalesced into one retrain per burst by ``on.data.settle``.
``on.data.assets``: new versions of the workspace's data assets named here, found by the reconciler (data
assets publish no event). ``on.runs``: the completion of a named upstream run (an ingestion or feature job).
"""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import Field, field_validator, model_validator

from handlers.policy_base import Duration, Strict

_ACCOUNT = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Storage/storageAccounts/[a-z0-9]{3,24}$",
    re.IGNORECASE,
)
_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_ASSET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")  # a data asset's name (no version: every new one counts)


class BlobSource(Strict):
    """One place new training data lands: a container of a storage account, and a prefix of its blobs."""

    account: str = Field(description="the storage account's resource id (its Event Grid system topic's source)")
    container: str
    prefix: str = Field(
        default="",
        description="a folder of the container, ending with '/' (blob names under it); '' is the whole container",
    )

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
        if value and not value.endswith("/"):
            # Matched as a string, 'train' would also take 'train2/...' and 'training-scratch/...': folders
            # that whoever may write beside 'train/' could fill. A folder is what a prefix names.
            parent = value.rpartition("/")[0]
            whole = f"{parent + '/'!r} for the whole folder" if parent else "'' for the whole container"
            raise ValueError(
                f"prefix {value!r} names a folder: write {value + '/'!r} ({value!r} would also take "
                f"'{value}2/...' and any other name that starts with it), or {whole}"
            )
        return value


class DataRule(Strict):
    """``retrain.on.data``: new blobs start one retrain after a burst has settled."""

    blobs: list[BlobSource] = Field(default_factory=list)
    assets: list[str] = Field(
        default_factory=list,
        description="data assets of the workspace whose new versions (found by the reconciler) start a retrain",
    )
    settle: Duration = Field(
        default=timedelta(minutes=5),
        description="a burst of new blobs starts one retrain once no new blob has come for this long",
    )

    max_wait: Duration | None = Field(
        default=None,
        description="a burst that never settles (a file every few seconds) starts its retrain this long after its "
        "first blob all the same; default none (it waits for the settle window)",
    )

    @model_validator(mode="after")
    def _max_wait(self) -> DataRule:
        wait = self.max_wait
        if wait is not None and not (self.settle <= wait <= timedelta(days=7)):
            raise ValueError(
                f"max_wait {wait} must be from settle ({self.settle}) to 7d, e.g. '1h': a burst that keeps receiving "
                "blobs starts its retrain that long after its first blob (remove max_wait to wait for a quiet settle window)"
            )
        return self

    @field_validator("settle")
    @classmethod
    def _settle(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=30) <= value <= timedelta(days=1):
            raise ValueError(
                "settle must be from 30s to 1d, e.g. '5m': a burst's retrain starts that long after its last blob "
                "(the reconciler looks on each pass, so it starts within one reconcile interval after that)"
            )
        return value

    @field_validator("assets")
    @classmethod
    def _assets(cls, value: list[str]) -> list[str]:
        for name in value:
            if ":" in name or "@" in name or not _ASSET.match(name):
                raise ValueError(
                    f"{name!r} is not a data asset name; write the name alone (e.g. 'diabetes-training', without "
                    "'azureml:' or a version): every version created after the service first looks starts a retrain"
                )
        if len({n.lower() for n in value}) != len(value):
            raise ValueError("a data asset is named twice; name each once")
        return value

    @model_validator(mode="after")
    def _names_some_data(self) -> DataRule:
        if not self.blobs and not self.assets:
            raise ValueError(
                "names no new data; list storage places under 'blobs' ({account, container, prefix}) or data asset "
                "names under 'assets', or remove 'data'"
            )
        return self


class UpstreamRun(Strict):
    """One upstream run whose completion starts the retrain: the runs of an experiment, narrowed by the
    run's display name and tags as the workspace reports them (the event is not trusted for these)."""

    experiment: str = Field(description="the experiment the upstream pipeline or job runs in (its experimentName)")
    display_name: str | None = Field(
        default=None, description="only runs with this display name (case-insensitive), as the workspace reports it"
    )
    tags: dict[str, str] = Field(default_factory=dict, description="only runs carrying these tags with these values")

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > 255 or "/" in value:
            raise ValueError(
                f"{value!r} is not an experiment name; write the experiment the upstream job runs in, as the studio "
                "shows it (e.g. 'ingest-daily'), not a path or a job name (a job's name differs on every run)"
            )
        return value


class OnRule(Strict):
    """``retrain.on``: what else starts the model's retraining (new data, upstream runs)."""

    data: DataRule | None = None
    runs: list[UpstreamRun] = Field(
        default_factory=list, description="upstream runs whose completion starts one retrain per run"
    )
