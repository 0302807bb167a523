"""The policy's building blocks, shared by :mod:`handlers.policy` and the rule modules it is made of
(:mod:`handlers.rollout_rules`): durations and the strict, frozen base model."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

_DURATION = re.compile(r"^\s*(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?\s*$")


def parse_duration(value: Any) -> timedelta:
    """'6h', '30m', '1d12h', '45s' or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '6h', '30m' or '1d'")  # noqa: TRY004 (pydantic reports ValueError)
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match or not any(match.groups()):
        raise ValueError(f"{value!r} is not a duration; write it like '6h', '30m', '1d12h' or '45s'")
    d, h, m, s = (int(g or 0) for g in match.groups())
    return timedelta(days=d, hours=h, minutes=m, seconds=s)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

_ASSET = re.compile(r"^azureml:([A-Za-z0-9][A-Za-z0-9_.-]{0,254}):([A-Za-z0-9][A-Za-z0-9_.-]{0,29})$")


def asset_version(value: str, example: str, holds: str) -> str:
    """``value`` if it names a data asset version (``azureml:<name>:<version>``), else a ValueError that
    shows ``example`` and says what the asset ``holds`` and why a version is named."""
    if not _ASSET.match(value):
        raise ValueError(
            f"{value[:120]!r} does not name a data asset version; write azureml:<name>:<version>, e.g. "
            f"azureml:{example} ({holds})"
        )
    return value


class Strict(BaseModel):
    """A policy section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
