"""Reading JSON that arrives over HTTP: one reader for every route, strict and bounded.

Whatever a body holds, reading it raises only :class:`InvalidInput` with a message that says what was
wrong: not JSON, larger than :data:`MAX_BYTES`, nested deeper than :data:`MAX_DEPTH`, or holding a
number JSON cannot carry (``NaN``, ``Infinity``, or one so large it overflows, like ``1e999``), named
by its path. Nothing is claimed or recorded before a body is read, so a bad one loses nothing.
"""

from __future__ import annotations

import json
import math
from typing import Any

from handlers.errors import InvalidInput

# Event Grid delivers at most 1 MB per event and per batch, Azure Monitor alerts are far smaller:
# this leaves room without letting one request hold a worker's memory.
MAX_BYTES = 4 * 1024 * 1024
# Azure ML events and the common alert schema nest a few levels; nothing real comes near this.
MAX_DEPTH = 64


def loads(raw: bytes | str, what: str) -> Any:
    """The JSON value of ``raw`` (``what`` says what was expected, for messages). Raises InvalidInput."""
    size = len(raw)
    if size > MAX_BYTES:
        raise InvalidInput(
            f"body of {size} bytes is larger than {MAX_BYTES} bytes; send {what} of at most {MAX_BYTES // 1024} KiB"
        )
    try:
        value = json.loads(raw)  # NaN and Infinity parse as floats: check() names where they are
    except RecursionError:
        raise InvalidInput(f"body is nested deeper than {MAX_DEPTH} levels; send {what}") from None
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError
        raise InvalidInput(f"body is not valid JSON ({exc}); send {what}") from exc
    check(value, what)
    return value


def check(value: Any, what: str) -> None:
    """Depth at most :data:`MAX_DEPTH` and every number finite; iterative, so depth costs no stack."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            where = f" at {path}" if path else ""
            raise InvalidInput(
                f"the number{where} is not a finite number (it reads as {item}: NaN and Infinity are not JSON, and "
                "a number too large overflows); send a finite number"
            )
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise InvalidInput(f"body is nested deeper than {MAX_DEPTH} levels; send {what}")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                child_path = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
                stack.append((child, child_path, depth + 1))
