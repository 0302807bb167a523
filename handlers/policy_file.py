"""The policy file, read: loaded once per worker and validated against :class:`handlers.policy.Policy`;
every problem is reported as ``FILE: key.path: what is wrong; how to fix it``. See docs/policy.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from handlers.errors import PolicyError
from handlers.policy import Policy

_NUMBER = "write a number, e.g. 0.7"
_DATETIME = "write a date-time such as '2026-12-24T00:00'"
_FIXES = {
    "missing": "it is required; add it",
    "extra_forbidden": "unknown key; remove it or check its spelling",
    "literal_error": "",
    "dict_type": "expected a mapping of keys to values",
    "model_type": "expected a mapping of keys to values, e.g. {key: value}",  # pydantic's says the class name
    "list_type": "expected a list, e.g. [a, b]",
    "too_short": "list at least one",
    "bool_parsing": "write true or false",
    "bool_type": "write true or false",
    "float_parsing": _NUMBER,
    "float_type": _NUMBER,
    "int_parsing": "write a whole number, e.g. 3",
    "int_type": "write a whole number, e.g. 3",
    "time_parsing": "write a time as HH:MM, e.g. '06:00'",
    "time_type": "write a time as HH:MM, e.g. '06:00'",
    "datetime_parsing": _DATETIME,
    "datetime_from_date_parsing": _DATETIME,
    "datetime_type": _DATETIME,
}
_REPLACES = ("extra_forbidden", "missing", "model_type")  # the fix is the whole message


def _format(path: str, err: Mapping[str, Any]) -> str:
    loc = ".".join(
        str(p) for p in err.get("loc", ()) if not str(p).startswith(("function-", "tag-"))
    )  # tag-: a union's branch
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    fix = _FIXES.get(str(err.get("type")), "")
    if err.get("type") in _REPLACES:
        msg = fix
    elif fix and fix not in msg:
        msg = f"{msg}; {fix}"
    return f"{path}: {loc or '(top level)'}: {msg}"


def parse_policy(text: str, path: str = "policy.yaml") -> Policy:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise PolicyError(
            path, [f"{path}: {where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax"]
        ) from exc
    if not isinstance(raw, Mapping):
        raise PolicyError(path, [f"{path}: (top level): expected a mapping with 'models'; see examples/policy.yaml"])
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(path, [_format(path, e) for e in exc.errors()]) from exc


def load_policy(path: str | Path) -> Policy:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(
            str(p), [f"{p}: cannot read the policy file ({exc.strerror}); set RETRAIN_POLICY_PATH to its path"]
        ) from exc
    return parse_policy(text, str(p))
