"""Freeze windows in the policy (``defaults.freeze``, ``models.<m>.freeze``): see :mod:`handlers.freeze`
and docs/policy.md ("Freeze windows")."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from handlers.freeze import DAYS
from handlers.policy_base import Strict

Action = Literal["retrain", "deploy", "promote"]


class FreezeWindow(Strict):
    """One freeze window: ``name``; ``timezone`` (IANA, e.g. ``Europe/Berlin``); ``actions`` it freezes
    (default all three); and either ``start`` and ``end`` (local date-times, one-off) or ``days``
    (``mon`` .. ``sun``) with ``from`` and ``to`` (local times, weekly; ``to`` earlier than ``from``
    runs across midnight)."""

    name: str = Field(min_length=1, max_length=80)
    timezone: str = "UTC"
    actions: tuple[Action, ...] = ("retrain", "deploy", "promote")
    start: datetime | None = None
    end: datetime | None = None
    days: tuple[str, ...] = ()
    from_: time | None = Field(default=None, alias="from")
    to: time | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone; write one such as 'Europe/Berlin', 'America/New_York' or 'UTC'"
            ) from None
        return value

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else list(value or [])
        out = []
        for item in items:
            day = str(item).strip().lower()[:3]
            if day not in DAYS:
                raise ValueError(f"{item!r} is not a day; write mon, tue, wed, thu, fri, sat or sun")
            out.append(day)
        return tuple(out)

    @field_validator("start", "end")
    @classmethod
    def _local(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            raise ValueError(
                "write a local date-time without an offset, e.g. '2026-12-24T00:00'; the window's timezone says where"
            )
        return value

    @field_validator("actions")
    @classmethod
    def _some(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("no actions; list what the window freezes: retrain, deploy, promote")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> FreezeWindow:
        once = self.start is not None or self.end is not None
        weekly = bool(self.days) or self.from_ is not None or self.to is not None
        if once == weekly:
            raise ValueError(
                "write either 'start' and 'end' (a one-off window) or 'days', 'from' and 'to' (a weekly one), "
                "e.g. {name: weekend, days: [sat, sun], from: '00:00', to: '23:59', timezone: Europe/Berlin}"
            )
        if once and (self.start is None or self.end is None or self.end <= self.start):
            raise ValueError("a one-off window needs 'start' and a later 'end'")
        if weekly and (not self.days or self.from_ is None or self.to is None or self.from_ == self.to):
            raise ValueError("a weekly window needs 'days', 'from' and 'to' (different times)")
        return self
