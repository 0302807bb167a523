"""A caller's reason (an operator's, an approver's, the stop switch's): one line of plain text, checked
alike wherever it comes in (the HTTP routes, the command line). It is recorded, logged and shown to whoever
decides next, so a control character (a new line forges a log line), a line or paragraph separator or a
bidirectional override (the next person reads it reordered) is refused, naming where it was given."""

from __future__ import annotations

import unicodedata

from handlers.errors import InvalidInput

MAX_REASON = 500  # characters kept of a reason
# bidirectional controls: they reorder how a record's text reads in the console, a terminal or a log viewer
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def one_line(text: str | None, name: str, example: str | None = None) -> str:
    """``text`` stripped and cut to :data:`MAX_REASON` characters, or InvalidInput naming ``name`` (the
    field or option it came in) when it is not one line of plain text, or is empty where ``example`` shows
    one is required; "no reason given" when it may be left out."""
    reason = (text or "").strip()[:MAX_REASON]
    bad = next((c for c in reason if unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in _BIDI), None)
    if bad is not None:
        raise InvalidInput(
            f"{name} holds the control character U+{ord(bad):04X}; write the reason as one line of plain text"
        )
    if not reason and example is not None:
        raise InvalidInput(f"{name} is required: {example}")
    return reason or "no reason given"
