"""The policy's ``models.<name>.environment``: the Azure ML registry a model's environment reads
promoted models from, and the environment's role in the promotion (docs/environments.md).

Today the service reads a registry in the **downstream** (prod) role: a champion served from the
policy's registry (``azureml://registries/<registry>/models/<m>/versions/<v>``) is judged by the
metric on that registry version's tags. A champion served from any other registry is not read: the
policy decides which registry the service trusts, not the endpoint. The upstream (dev) role, sharing a
promoted candidate into the registry, is not built yet and is refused with that fix.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from handlers.policy_base import Strict

# An Azure ML registry name: 3 to 33 characters, letters, digits, '-' and '_', starting with a letter
# or a digit (the rules `az ml registry create` enforces for a registry's name).
_REGISTRY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$")
_PLANNED = {"upstream", "dev"}


class EnvironmentRule(Strict):
    """Where the model's promotions come from: ``registry`` names the Azure ML registry, ``role`` this
    environment's place in the promotion (``downstream``: a prod environment that serves versions of
    the registry)."""

    registry: str = Field(description="the Azure ML registry (its name) this environment reads models from")
    role: Literal["downstream"] = Field(description="downstream: prod, serving versions of the registry")

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
        if isinstance(value, str) and value.casefold() in _PLANNED:
            raise ValueError(
                f"role {value!r} (sharing promoted candidates into the registry) is not available yet; "
                "write 'downstream' for an environment that serves the registry's versions, or remove "
                "'environment' from this model"
            )
        if isinstance(value, str) and value.casefold() == "prod":
            raise ValueError("write role: downstream (the prod environment's role)")
        return value
