"""Pinning a retrain's data and model inputs to versions (docs/policy.md, "What `@latest` means").

A data input (``uri_folder``, ``uri_file``, ``mltable``) or a model input (``custom_model``, ``mlflow_model``: the
base model a pipeline fine-tunes, say) that names its asset by ``@latest`` (``azureml:<name>@latest``), or by its
name alone (an event's dataset id: the Azure ML backend reads it as its latest version), would read whatever version
is latest when the job is submitted, which anyone who can register a version of the asset chooses. So when a
retrain is carried out, before its checks, its wait for approval and its submission, each such input is resolved by
the service to the version Azure ML names latest (``data.get(name, label="latest")``: the data asset's most recently
created version; ``models.get(name, label="latest")``: the model's), and the job is submitted with that version:
what an approver reviews is what is trained, and the decision's plan records it (``value`` the version,
``pinned_from`` what the policy or the event said). Four eyes then compare each pinned version's creator with the
approver and the promoter (:func:`pinned_versions`, :mod:`handlers.creators`), as they do the version that started
a retrain. A backend that reads no workspace (the dry run) pins nothing: the input says why (``not_pinned``). Pure,
stdlib only.

Nothing is written ahead: the job is the truth. A retrain resumed after its worker died (a redelivery, the
reconciler) first looks for the job of its name, which that worker may have submitted before it died
(:mod:`handlers.jobnames`: adopted only when provably this decision's); when it is there, what is recorded is what
that job's inputs hold (:func:`as_adopted`), nothing is pinned again. Otherwise it pins again and submits (and a
submission that meets the job, submitted meanwhile, adopts it the same way). A retrain approved after it waited
keeps the pins its ``pending`` record shows (:func:`as_reserved`): they are what was reviewed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

from handlers.errors import PermanentError
from handlers.plans import JobPlan, Retrain
from handlers.records import DecisionRecord

LATEST = "latest"  # the one label azure-ai-ml resolves
DATA_TYPES = ("uri_folder", "uri_file", "mltable")  # the job input types that name data
MODEL_TYPES = ("custom_model", "mlflow_model")  # ... and a model (triton_model: not a type the policy accepts)
DATA, MODEL = "data", "model"  # what a pinned input reads (handlers.creators reads its creator so)
THINGS = {DATA: "data asset", MODEL: "model"}
PINNED_FROM, NOT_PINNED = "pinned_from", "not_pinned"
ADOPTED = "adopted_differs"  # an adopted job's input that is not a version of the asset the plan pinned
UNREAD = "not pinned: this backend reads no workspace (the dry run), so which version is latest was not read"


@runtime_checkable
class AssetVersions(Protocol):
    """Reads which version of a data asset or a model is its latest (the Azure ML backend)."""

    def latest_data(self, name: str) -> str:
        """The version ``data.get(name, label="latest")`` gives. PermanentError when the workspace has no such asset
        (or refuses), TransientError when it cannot answer now."""
        ...

    def latest_model(self, name: str) -> str:
        """The version ``models.get(name, label="latest")`` gives; errors as :meth:`latest_data`'s."""
        ...


def kind_of(spec: Mapping[str, Any]) -> str | None:
    """What an input's type names: ``data``, a ``model``, or None (a literal, anything else)."""
    kind = spec.get("type")
    return DATA if kind in DATA_TYPES else MODEL if kind in MODEL_TYPES else None


def reads_latest(spec: Mapping[str, Any]) -> str | None:
    """The data asset or model an input reads the latest version of (``azureml:<name>@latest``, or ``azureml:<name>``
    with no version), or None: a version, a URI, a literal, an input pinned already."""
    value = spec.get("value")
    if kind_of(spec) is None or PINNED_FROM in spec or not isinstance(value, str):
        return None
    if not value.startswith("azureml:") or value.startswith("azureml://"):
        return None
    name, at, label = value.removeprefix("azureml:").partition("@")
    if (at and label != LATEST) or not name or ":" in name or "/" in name:
        return None
    return name


def pin(plan: JobPlan, versions: AssetVersions | None, unread: str = UNREAD) -> JobPlan:
    """``plan`` with each input that reads a data asset's or a model's latest version pinned to the version
    ``versions`` names latest now (None: nothing is read; the input then says why it was not pinned, ``unread``).
    Raises what ``versions`` raises; a plain PermanentError (no such asset) names the input."""
    inputs: dict[str, dict[str, Any]] = {}
    for name, spec in plan.inputs.items():
        asset = reads_latest(spec)
        if asset is None:
            inputs[name] = spec
        elif versions is None:
            inputs[name] = {**spec, NOT_PINNED: unread}
        else:
            latest = versions.latest_model if kind_of(spec) == MODEL else versions.latest_data
            try:
                version = latest(asset)
            except PermanentError as exc:
                if type(exc) is not PermanentError:  # a kind the caller tells apart (handlers.errors): as it is
                    raise
                raise PermanentError(f"input {name!r} of model {plan.model!r} reads {spec['value']!r}: {exc}") from exc
            inputs[name] = {**spec, "value": f"azureml:{asset}:{version}", PINNED_FROM: spec["value"]}
    return plan if inputs == plan.inputs else replace(plan, inputs=inputs)


def as_reserved(decision: Retrain, reserved: DecisionRecord | None) -> Retrain:
    """A resumed retrain keeps the versions its reserved record pinned (the pins of its ``pending`` record, which
    an approval makes ``reserved``): they are what the approver reviewed, and the asset's latest version may have
    moved on since."""
    rendered = reserved.details.get("rendered") if reserved is not None and reserved.outcome == "reserved" else None
    kept = rendered.get("inputs") if isinstance(rendered, Mapping) else None
    if not isinstance(kept, Mapping):
        return decision
    inputs = dict(decision.job.inputs)
    for name, spec in decision.job.inputs.items():
        was = kept.get(name)
        if isinstance(was, Mapping) and was.get(PINNED_FROM) == spec.get("value") and reads_latest(spec):
            inputs[name] = dict(was)
    return decision if inputs == decision.job.inputs else replace(decision, job=replace(decision.job, inputs=inputs))


def pinned_versions(rendered: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Each input a retrain's plan pinned, as ``(input, kind, "name:version")`` (kind: ``data`` or ``model``), for
    four eyes."""
    out = []
    for name, spec in (rendered.get("inputs") or {}).items():
        if isinstance(spec, Mapping) and spec.get(PINNED_FROM) and isinstance(spec.get("value"), str):
            out.append((str(name), kind_of(spec) or DATA, str(spec["value"]).removeprefix("azureml:")))
    return out


def data_version(ref: str | None) -> tuple[str, str] | None:
    """``(asset, version)`` of a data asset or model version as a job's input names it
    (``azureml:<asset>:<version>``), or None: a label, a name alone, a URI, a resource id, nothing."""
    if not isinstance(ref, str) or not ref.startswith("azureml:") or ref.startswith("azureml://"):
        return None
    name, _, version = ref.removeprefix("azureml:").partition(":")
    if not name or not version or any(c in name + version for c in ":@/"):
        return None
    return name, version


def as_adopted(plan: JobPlan, held: Mapping[str, str | None]) -> JobPlan:
    """``plan`` as the job it adopted trains on: each input it pinned names the version that job's input holds
    (``held``: input -> its path, ``azureml:<asset>:<version>`` for a version of this workspace's), not the one
    read again as it resumed. The job is this decision's (named from its key, created by this service: the Jobs
    port adopts nothing else), so an input that holds another asset's version or no version at all was submitted
    so by this service (under an earlier policy): it is recorded as the job holds it, saying so (``adopted_differs``);
    a version keeps ``pinned_from``, so four eyes compare its creator. An input that reads ``@latest`` unpinned (a
    resumed retrain adopts its job before pinning anything) is taken as pinned from what it reads. Inputs that read
    no asset's latest version are as the plan says."""
    inputs: dict[str, dict[str, Any]] = {}
    for name, given in plan.inputs.items():
        spec = given
        if PINNED_FROM not in given and NOT_PINNED not in given and reads_latest(given) is not None:  # resumed
            spec = {**given, PINNED_FROM: given["value"]}
        asked = spec.get(PINNED_FROM)
        if not isinstance(asked, str):
            inputs[name] = given
            continue
        ref = held.get(name)
        version = data_version(ref)
        asset = asked.removeprefix("azureml:").partition("@")[0]
        if version is not None and version[0].casefold() == asset.casefold():
            inputs[name] = {**spec, "value": f"azureml:{version[0]}:{version[1]}"}
            continue
        holds = "no such input" if ref is None else repr(str(ref)[:300])
        said = (
            f"the adopted job holds {holds}, not a version of {THINGS[kind_of(spec) or DATA]} {asset!r} that {asked!r} "
            "reads: it was submitted by this service for this decision before (under another policy); recorded as the job holds it"
        )
        if version is not None:
            inputs[name] = {**spec, "value": str(ref), ADOPTED: said}
        else:
            inputs[name] = {**{k: v for k, v in spec.items() if k != PINNED_FROM}, "value": ref, ADOPTED: said}
    return plan if inputs == plan.inputs else replace(plan, inputs=inputs)
