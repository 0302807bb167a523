"""Input checks: whether a value may feed a retraining input, and whether a manual request can be
carried out.

A manual request is checked before it is claimed (:func:`check_manual`), so that its caller gets a 4xx
and nothing is recorded; :func:`handlers.decisions.decide` applies the same checks to the values an event
brings, and skips (saying what and how to fix it) what they refuse. No I/O, no clock read, no SDK import.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from handlers.errors import InvalidInput, NotFound
from handlers.signals import ManualRequest

if TYPE_CHECKING:  # the policy module imports pydantic; the checks only read the objects
    from handlers.policy import InputSpec, ModelPolicy, Policy

# A model version as a manual deploy names it: a version number, or the one label the SDK resolves.
_VERSION = re.compile(r"^(?:[1-9][0-9]{0,17}|latest)$")


def bare(value: Any) -> bool:
    """An id with nothing that makes it a reference (no version, label or path): a v1 dataset id."""
    return isinstance(value, str) and not any(c in value for c in ":/@")


def v1_dataset_problem(model: str, name: str, key: str, value: Any) -> str:
    return (
        f"input {name!r} takes the event's {key!r}, but {str(value)[:80]!r} from an SDK v1 data-drift event "
        "is a v1 dataset id, not a data asset name; give the input a data asset as 'value' "
        f"(models.{model}.retrain.inputs.{name}), or move the model to v2 model monitoring"
    )


_ASSET = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}"
_WORKSPACE_REFERENCE = re.compile(
    rf"^(?:azureml:)?{_ASSET}(?::[A-Za-z0-9_.-]+|@latest)?$"  # a data asset: name, name:version, name@latest
    r"|^azureml://datastores/[A-Za-z0-9_]{1,255}/paths/\S+$"  # a path on one of the workspace's datastores
)
_LONG_DATASTORE = re.compile(
    r"^azureml://subscriptions/(?P<sub>[^/]+)/resource[gG]roups/(?P<rg>[^/]+)/workspaces/(?P<ws>[^/]+)/datastores/[A-Za-z0-9_]{1,255}/paths/\S+$"
)


_ENCODED = re.compile(r"%(?:2e|2f|5c)", re.IGNORECASE)


def unresolved(uri: str) -> bool:
    """A URI whose place depends on who reads it: a ``.`` or ``..`` segment, percent-encoded or not
    (``prefix/../other`` starts with ``prefix/`` as a string and is ``other`` once resolved), a backslash
    (a separator to some tools), or a query or fragment (a data path has none; a query is where a SAS
    token travels). Allowed prefixes are matched on the text as it is, so such a URI matches none."""
    if "\\" in uri or "?" in uri or "#" in uri or _ENCODED.search(uri):
        return True
    return any(part in (".", "..") for part in uri.split("/"))


def reference_problem(
    model: str, name: str, spec: InputSpec, value: str, workspace: str, origin: str = "event"
) -> str | None:
    """A path input's value taken from an event must name something in the workspace (a data asset or
    a path on one of its datastores) or start with a prefix the policy allows: event data never
    chooses what a model trains on beyond what the policy allows. None when it is allowed."""
    given = f"takes its value from the event's {spec.from_event!r}, which is" if origin == "event" else "was sent as"
    shown = re.split(r"[?#]", value, maxsplit=1)[0][:200]  # a query may hold a SAS token: never repeated
    if any(value.startswith(prefix) for prefix in spec.allowed_prefixes):
        if not unresolved(value):
            return None
        return (
            f"input {name!r} {given} {shown!r}, which starts with an allowed prefix but resolves outside it, or "
            "carries a query or fragment: a '.' or '..' segment (also percent-encoded, %2e, %2f), a backslash, "
            f"'?' or '#' is not a path under models.{model}.retrain.inputs.{name}.allowed_prefixes; send the "
            "path itself"
        )
    if _WORKSPACE_REFERENCE.match(value) and ".." not in value:
        return None
    long_form = _LONG_DATASTORE.match(value)
    if long_form and ".." not in value:
        ws = workspace.strip("/").lower()
        if ws.startswith(
            f"subscriptions/{long_form['sub'].lower()}/resourcegroups/{long_form['rg'].lower()}/"
        ) and ws.endswith(f"/workspaces/{long_form['ws'].lower()}"):
            return None
    return (
        f"input {name!r} {given} {shown!r}: not a data asset or datastore path of this workspace, so nothing "
        f"is trained on it; to allow such URIs, list their prefix in models.{model}.retrain.inputs.{name}.allowed_prefixes"
    )


def input_problem(model: str, name: str, spec: InputSpec, value: Any, origin: str, manual: bool) -> str | None:
    """What is wrong with input ``name``'s value, in words that say how to fix it; None when nothing is."""
    where = "this request" if manual else "this event"
    key = f"models.{model}.retrain.inputs.{name}"
    source = "request's inputs" if origin == "request" else "policy" if origin == "policy" else f"{origin} of {where}"
    if value is None:
        return (
            f"input {name!r} takes its value from the event's {spec.from_event!r}, which {where} does not carry; "
            f"give the input a fallback 'value' in the policy ({key})" + (" or pass it in 'inputs'" if manual else "")
        )
    if spec.type != "literal":
        if not isinstance(value, str):
            return (
                f"input {name!r} is of type {spec.type} and takes a path or asset reference string, but the {source} "
                f"gave {type(value).__name__} {str(value)[:80]!r}; send a string such as 'azureml:name:version' ({key})"
            )
        return None
    if not isinstance(value, str | int | float | bool):
        return (
            f"input {name!r} takes a number, a string or true/false; the {source} gave {type(value).__name__} ({key})"
        )
    if isinstance(value, float) and not math.isfinite(value):
        return f"input {name!r} must be a finite number; the {source} gave {value} ({key})"
    if spec.choices is not None and value not in spec.choices:
        allowed = ", ".join(map(repr, spec.choices))
        return f"input {name!r} must be one of {allowed}; the {source} gave {value!r} ({key}.choices)"
    if spec.min is not None or spec.max is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return (
                f"input {name!r} must be a number; the {source} gave {type(value).__name__} {str(value)[:80]!r} ({key})"
            )
        if spec.min is not None and value < spec.min:
            return f"input {name!r} must be at least {spec.min}; the {source} gave {value} ({key}.min)"
        if spec.max is not None and value > spec.max:
            return f"input {name!r} must be at most {spec.max}; the {source} gave {value} ({key}.max)"
    return None


def check_manual(request: ManualRequest, policy: Policy) -> None:
    """A manual request the policy can carry out, or NotFound / InvalidInput saying why not (checked
    before the request is claimed, so that the caller gets a 4xx and nothing is recorded)."""
    mp = policy.models.get(request.model)
    if mp is None:
        raise NotFound(f"model {request.model!r} is not in the policy; known: {', '.join(policy.models)}")
    problem = manual_problem(request, mp)
    if problem is not None:
        raise InvalidInput(problem)


def manual_problem(signal: ManualRequest, mp: ModelPolicy) -> str | None:
    model = signal.model
    if signal.action == "retrain":
        if mp.retrain is None:
            return f"model {model!r} has no 'retrain' section in the policy; add one to retrain it"
        allowed = set(mp.retrain.overridable)
        refused = sorted(set(signal.inputs) - allowed)
        if refused:
            return (
                f"inputs {', '.join(map(repr, refused))} may not be overridden for model {model!r}; "
                f"overridable: {', '.join(sorted(allowed)) or 'none'} (policy: models.{model}.retrain.overridable)"
            )
        for name, spec in mp.retrain.inputs.items():
            value, origin = (signal.inputs[name], "request") if name in signal.inputs else (spec.value, "policy")
            problem = input_problem(model, name, spec, value, origin, manual=True)
            if problem is None and origin == "request" and spec.type != "literal":
                problem = reference_problem(model, name, spec, str(value), "", origin="request")
            if problem is not None:
                return problem
        return None
    if signal.action == "deploy":
        if mp.deploy is None:
            return f"model {model!r} has no 'deploy' section in the policy; add one to deploy it"
        if signal.version is None or not _VERSION.match(signal.version):
            shown = "none" if signal.version is None else repr(signal.version[:40])
            return (
                f"field 'version' must be a model version number (a whole number from 1, at most 18 digits) or "
                f"'latest', the one label Azure ML resolves; got {shown}"
            )
        return None
    return f"action {signal.action!r} is not one of retrain, deploy"
