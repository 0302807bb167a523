"""Freezes: when the service starts no new work and moves no rollout forward. Pure: stdlib only.

Two kinds, both naming what they freeze (``retrain``, ``deploy``, ``promote``):

- **windows** in the policy (``defaults.freeze``, ``models.<m>.freeze``; :mod:`handlers.freeze_rules`):
  one-off (``start``..``end``) or weekly (``days``, ``from``..``to``, across midnight if ``to`` is
  earlier), in a named IANA time zone, so that "Friday 16:00 in New York" stays 16:00 across daylight
  saving changes (:mod:`zoneinfo`);
- **the stop switch** (``POST /api/freeze``, ``/api/unfreeze``, ``retrain freeze``): kept in each
  model's state (:attr:`handlers.records.ModelState.frozen`), with who set it, why and when, so the
  guards read it in the same atomic read-and-write as the slot they refuse.

What each freezes: ``retrain`` refuses new retrains; ``deploy`` refuses new candidate deployments and
holds every rollout move that gives a candidate more traffic (its first step, the shadow stage, the
next step, the promotion); ``promote`` holds only the promotion (and the step that gives the candidate
all of the traffic). A rollback is never held.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

ACTIONS = ("retrain", "deploy", "promote")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class WindowLike(Protocol):
    """A freeze window as the policy holds it (:class:`handlers.freeze_rules.FreezeWindow`)."""

    @property
    def name(self) -> str: ...
    @property
    def timezone(self) -> str: ...
    @property
    def actions(self) -> tuple[str, ...]: ...
    @property
    def start(self) -> datetime | None: ...
    @property
    def end(self) -> datetime | None: ...
    @property
    def days(self) -> tuple[str, ...]: ...
    @property
    def from_(self) -> time | None: ...
    @property
    def to(self) -> time | None: ...


@dataclass(frozen=True)
class Frozen:
    """Why an action is frozen now: ``what`` names the window or the switch; ``until``: when it ends
    (ISO, UTC), None for the switch (until someone unfreezes)."""

    what: str
    why: str
    until: str | None
    approval: bool = False  # not a freeze: the move waits for a person's approval (deploy.approval.promote)

    @property
    def reason(self) -> str:
        return f"{self.what}: {self.why}"

    @property
    def state(self) -> str:
        """What the reconciler's report says of a rollout it holds: ``frozen``, or ``waiting`` for approval."""
        return "waiting" if self.approval else "frozen"

    @property
    def held(self) -> str:
        """Why a rollout holds, as its record says it: frozen by a window or the switch, or waiting for approval."""
        return f"waits for approval ({self.reason})" if self.approval else f"frozen by {self.reason}"


def _utc(local: datetime, zone: ZoneInfo) -> datetime:
    return local.replace(tzinfo=zone).astimezone(UTC)


def window_end(window: WindowLike, now: datetime) -> datetime | None:
    """When ``window`` ends if it is open at ``now`` (aware, any zone), else None."""
    zone = ZoneInfo(window.timezone)
    if window.start is not None and window.end is not None:
        start, end = _utc(window.start, zone), _utc(window.end, zone)
        return end if start <= now < end else None
    if window.from_ is None or window.to is None:
        return None
    local = now.astimezone(zone)
    for back in (0, 1):  # a window that began yesterday and runs across midnight
        day: date = local.date() - timedelta(days=back)
        if DAYS[day.weekday()] not in window.days:
            continue
        start = datetime.combine(day, window.from_, tzinfo=zone)
        end_day = day if window.to > window.from_ else day + timedelta(days=1)
        end = datetime.combine(end_day, window.to, tzinfo=zone)
        # wall-clock times, as people write them: 16:00 is 16:00 in summer and in winter
        # as instants in UTC (two datetimes of one zone would compare by their wall clocks)
        if start.astimezone(UTC) <= now.astimezone(UTC) < end.astimezone(UTC):
            return end.astimezone(UTC)
    return None


def _describe(window: WindowLike) -> str:
    if window.start is not None and window.end is not None:
        return f"{window.start.isoformat(timespec='minutes')} to {window.end.isoformat(timespec='minutes')} {window.timezone}"
    days = ",".join(window.days)
    frm = window.from_.strftime("%H:%M") if window.from_ else "?"
    to = window.to.strftime("%H:%M") if window.to else "?"
    return f"{days} {frm}-{to} {window.timezone}"


def switch_of(state_frozen: Mapping[str, Any] | None, action: str) -> Frozen | None:
    """The stop switch as a model's state keeps it, when it freezes ``action``."""
    if not state_frozen or action not in (state_frozen.get("actions") or ACTIONS):
        return None
    who, why, at = (
        state_frozen.get("by") or "someone",
        state_frozen.get("why") or "no reason given",
        state_frozen.get("at"),
    )
    return Frozen("the stop switch", f"set by {who} at {at}: {why}; POST /api/unfreeze to lift it", None)


def frozen(
    state_frozen: Mapping[str, Any] | None, windows: Iterable[WindowLike], action: str, now: datetime
) -> Frozen | None:
    """Why ``action`` is frozen at ``now`` (the switch first, then the window that ends last), or None."""
    switch = switch_of(state_frozen, action)
    if switch is not None:
        return switch
    open_ = [(end, w) for w in windows if action in w.actions and (end := window_end(w, now)) is not None]
    if not open_:
        return None
    end, window = max(open_, key=lambda pair: pair[0])
    until = end.isoformat().replace("+00:00", "Z")
    return Frozen(f"freeze window {window.name!r}", f"{_describe(window)}, until {until}", until)
