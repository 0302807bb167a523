"""Case-insensitive access to event data, and deterministic keys and names."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from typing import Any


def ci_get(data: Mapping[str, Any] | None, *names: str) -> Any:
    """Return the first of ``names`` present in ``data``, ignoring key case (None if absent)."""
    if not data:
        return None
    lowered = {str(k).lower(): v for k, v in data.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value is not None:
            return value
    return None


def digest(*parts: str, length: int = 16) -> str:
    """A short, stable hex digest of ``parts`` (the same parts give the same digest everywhere)."""
    h = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return h[:length]


_NAME_UNSAFE = re.compile(r"[^a-z0-9-]+")


def slug(text: str, max_len: int = 32) -> str:
    """Lower-case letters, digits and dashes; safe in Azure ML job and deployment names."""
    s = _NAME_UNSAFE.sub("-", text.lower()).strip("-")
    return (s[:max_len].rstrip("-")) or "x"


def as_str(value: Any) -> str | None:
    """Versions and ids arrive as numbers or strings; normalise to a string."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def finite(value: Any) -> float | None:
    """``value`` as a finite number, or None: ``true``, ``"NaN"``, infinities and text are no number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
