"""``deploy.batch_endpoint``: a model scored by an Azure ML **batch** endpoint (docs/rollouts.md, Batch
endpoints). Its candidate becomes a batch deployment beside the endpoint's default one; once
provisioned, the endpoint's ``defaults.deployment_name`` is switched to it (the promotion), and an
operator's rollback switches it back."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from handlers.policy_base import Strict

# Batch endpoint names: 3-32 characters, a letter first, letters, digits and dashes (Azure ML's endpoint
# naming rules, the same as an online endpoint's).
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")


class BatchEndpointRule(Strict):
    """The batch endpoint a model's candidates are deployed to, by name."""

    name: str = Field(description="the batch endpoint's name in the workspace")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid batch endpoint name; use 3-32 letters, digits and dashes, "
                "starting with a letter"
            )
        return value
