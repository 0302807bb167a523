"""The policy's ``models.<name>.environment``: the Azure ML registry a model's promotions go to or
come from, and this environment's role in the promotion (docs/environments.md).

**upstream** (dev): a promoted candidate is shared into the registry under the model's name and its
workspace version, with its lineage as tags (:mod:`handlers.lineage`), when it is promoted.

**downstream** (prod): a champion served from the policy's registry
(``azureml://registries/<registry>/models/<m>/versions/<v>``) is judged by the metric on that registry
version's tags. A champion served from any other registry is not read: the policy decides which
registry the service trusts, not the endpoint.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from handlers.policy_base import Strict

# An Azure ML registry name: 3 to 33 characters, letters, digits, '-' and '_', starting with a letter
# or a digit (the rules `az ml registry create` enforces for a registry's name).
_REGISTRY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$")
_ALIASES = {"dev": "upstream", "prod": "downstream"}


class EnvironmentRule(Strict):
    """Where the model's promotions go or come from: ``registry`` names the Azure ML registry, ``role``
    this environment's place in the promotion (``upstream``: dev, shares what it promotes into the
    registry; ``downstream``: prod, serves versions of the registry)."""

    registry: str = Field(description="the Azure ML registry (its name) promotions go to or come from")
    role: Literal["upstream", "downstream"] = Field(
        description="upstream: dev, sharing its promotions into the registry; downstream: prod, serving its versions"
    )

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
