"""The policy's ``models.<name>.environment``: the Azure ML registry a model's promotions go to or
come from, and this environment's role in the promotion (docs/environments.md).

**upstream** (dev): a promoted candidate is shared into the registry under the model's name and its
workspace version, with its lineage as tags (:mod:`handlers.lineage`), when it is promoted.

**downstream** (prod): a champion served from the policy's registry
(``azureml://registries/<registry>/models/<m>/versions/<v>``) is judged by the metric on that registry
version's tags. A champion served from any other registry is not read: the policy decides which
registry the service trusts, not the endpoint. With ``upstream`` (the dev workspace whose service
shares into the registry), new versions of the model in the registry are picked up
(:mod:`handlers.pickup`): from the upstream service's promotion notifications, whose ``source`` must be
``upstream``, and by polling the registry; only versions whose lineage names ``upstream`` are taken.
The reconciler polls on each of its passes (``RETRAIN_RECONCILE_SCHEDULE``), or at most once per
``poll_every`` per worker.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from handlers.policy_base import Duration, Strict

# An Azure ML registry name: 3 to 33 characters, letters, digits, '-' and '_', starting with a letter
# or a digit (the rules `az ml registry create` enforces for a registry's name).
_REGISTRY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$")
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# How an operator finds the upstream service's identity's ids (the dev deployment's identity)
FIND_IDENTITY = (
    "e.g. upstream_identity: [<clientId>, <principalId>] from `az identity show -g <dev resource group> -n "
    "<dev identity> --query '[clientId, principalId]'` (the dev deployment's outputs RETRAIN_IDENTITY_CLIENT_ID "
    "and RETRAIN_IDENTITY_PRINCIPAL_ID)"
)
_ALIASES = {"dev": "upstream", "prod": "downstream"}
POLL_EVERY = (timedelta(minutes=1), timedelta(days=1))  # the range of environment.poll_every
# An Azure ML workspace's resource id: what the upstream service's notifications carry as their source
# (RETRAIN_NOTIFY's CloudEvents: the workspace it acts for) and its lineage as retrain_source_workspace.
_WORKSPACE_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.MachineLearningServices/workspaces/[^/]+$",
    re.IGNORECASE,
)


class EnvironmentRule(Strict):
    """Where the model's promotions go or come from: ``registry`` names the Azure ML registry, ``role``
    this environment's place in the promotion (``upstream``: dev, shares what it promotes into the
    registry; ``downstream``: prod, serves versions of the registry)."""

    registry: str = Field(description="the Azure ML registry (its name) promotions go to or come from")
    role: Literal["upstream", "downstream"] = Field(
        description="upstream: dev, sharing its promotions into the registry; downstream: prod, serving its versions"
    )
    upstream: str | None = Field(
        default=None,
        description="downstream only: the dev workspace (its resource id) whose promotions are picked up from the "
        "registry; unset, nothing is picked up",
    )
    upstream_identity: list[str] | None = Field(
        default=None,
        description="downstream with upstream: the upstream (dev) service's managed identity, its client id and/or "
        "object id; a registry version is picked up only when the registry records that identity as its creator "
        "(systemData.createdBy), never on its tags alone",
    )
    poll_every: Duration | None = Field(
        default=None,
        description="downstream with upstream only: the reconciler lists the registry's versions of the model at most "
        "this often, 1m to 1d (unset: on every reconciler pass)",
    )

    @property
    def serves_from(self) -> str | None:
        """The registry whose versions this environment serves and reads as its champion (downstream only)."""
        return self.registry if self.role == "downstream" else None

    @field_validator("upstream")
    @classmethod
    def _upstream_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if not _WORKSPACE_ID.match(value):
            raise ValueError(
                f"{value[:200]!r} is not an Azure ML workspace's resource id: write the dev workspace's id, "
                "/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.MachineLearningServices/workspaces/"
                "<name> (the source of its service's notifications)"
            )
        return value

    @field_validator("upstream_identity", mode="before")
    @classmethod
    def _identity_ids(cls, value: object) -> object:
        if isinstance(value, str):  # one id, written as a string
            value = [value]
        if value is None or not isinstance(value, list):
            return value
        out = []
        for item in value:
            text = str(item).strip().lower()
            if not _GUID.match(text):
                raise ValueError(
                    f"{str(item)[:100]!r} is not an identity's id: write the upstream service's managed identity's "
                    f"client id and object id (GUIDs), {FIND_IDENTITY}"
                )
            out.append(text)
        if not out:
            raise ValueError(f"name at least one id of the upstream service's managed identity, {FIND_IDENTITY}")
        return out

    @model_validator(mode="after")
    def _upstream_downstream(self) -> EnvironmentRule:
        if self.upstream is not None and self.role != "downstream":
            raise ValueError(
                "upstream names the dev workspace a downstream (prod) environment picks up from; with role "
                "upstream, remove it"
            )
        if self.upstream is not None and not self.upstream_identity:
            raise ValueError(
                "upstream_identity is required with upstream: a registry version is picked up only when the registry "
                "records the upstream service's identity as its creator (its tags are anyone's with write access to "
                f"the registry); write its client id and object id, {FIND_IDENTITY}"
            )
        if self.upstream_identity and self.upstream is None:
            raise ValueError(
                "upstream_identity names who shares the versions upstream picks up; without upstream (role downstream) "
                "nothing is picked up: remove upstream_identity, or set upstream"
            )
        if self.poll_every is not None and self.upstream is None:
            raise ValueError(
                "poll_every is how often the registry is polled for the versions upstream shares; without upstream "
                "(role downstream) nothing is polled: remove poll_every, or set upstream"
            )
        return self

    @field_validator("poll_every")
    @classmethod
    def _poll_every(cls, value: timedelta | None) -> timedelta | None:
        low, high = POLL_EVERY
        if value is not None and not low <= value <= high:
            raise ValueError(
                "poll_every must be from 1m to 1d, e.g. '15m': the reconciler lists the registry's versions at most "
                "this often (it runs every RETRAIN_RECONCILE_SCHEDULE, 5 minutes by default, so a shorter interval "
                "polls on every pass)"
            )
        return value

    @field_validator("registry")
    @classmethod
    def _registry_name(cls, value: str) -> str:
        if not _REGISTRY.match(value):
            raise ValueError(
                f"{value!r} is not an Azure ML registry name: write its name (3 to 33 letters, digits, '-' "
                "or '_', starting with a letter or a digit), not its id or URL"
            )
        return value

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: object) -> object:
        if isinstance(value, str) and value.casefold() in _ALIASES:
            raise ValueError(f"write role: {_ALIASES[value.casefold()]} (the {value.casefold()} environment's role)")
        return value
