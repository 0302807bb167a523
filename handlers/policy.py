"""The policy: which models the service looks after, and how.

The pydantic model of the policy file, which :mod:`handlers.policy_file` reads and validates once per
worker. See docs/policy.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from handlers.batch_rules import BatchEndpointRule
from handlers.environment_rules import EnvironmentRule
from handlers.freeze_rules import FreezeWindow
from handlers.gate_rules import GateRule
from handlers.policy_base import Duration, Strict
from handlers.rollout_rules import RolloutRule
from handlers.signal_rules import checked_classes, class_problem
from handlers.trigger_rules import OnRule

_PIPELINE = re.compile(
    r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]{0,254})(?::(?P<version>[A-Za-z0-9_.-]+)|@(?P<label>[A-Za-z0-9_.-]+))$"
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_ENDPOINT = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")


class PipelineRef(Strict):
    """A registered pipeline component: ``name:version`` or ``name@label``."""

    name: str
    version: str | None = None
    label: str | None = None

    def __str__(self) -> str:
        return f"{self.name}:{self.version}" if self.version else f"{self.name}@{self.label}"


def _pipeline(value: Any) -> Any:
    if isinstance(value, (PipelineRef, Mapping)):
        return value
    text = str(value).strip()
    match = _PIPELINE.match(text)
    if not match:
        bare = text.split(":")[0].split("@")[0] or "train"
        raise ValueError(
            f"component {text!r} has no version; write '{bare}:3' or '{bare}@latest'"
            if ":" not in text and "@" not in text
            else f"{text!r} is not a component reference; write 'name:version' or 'name@latest'"
        )
    if match["label"] is not None and match["label"] != LATEST:
        raise ValueError(_label_problem(text, match["name"], match["label"]))
    return {"name": match["name"], "version": match["version"], "label": match["label"]}


LATEST = "latest"  # the only label azure-ai-ml resolves (components.get, data and model references)


def _label_problem(text: str, name: str, label: str) -> str:
    return (
        f"{text!r} names the label {label!r}, but the Azure ML SDK resolves only the label 'latest'; "
        f"write '{name}@latest' or pin a version ('{name}:3')"
    )


InputType = Literal["literal", "uri_folder", "uri_file", "mltable", "custom_model", "mlflow_model"]


class InputSpec(Strict):
    """One pipeline input: a literal ``value``, or a key of the triggering event's data. A literal may
    bound what a manual request or an event may give it (``min``, ``max``, ``choices``); a path input
    taken ``from_event`` must name something in the workspace unless ``allowed_prefixes`` lists the
    URI prefixes it may also take."""

    type: InputType = "literal"
    value: str | int | float | bool | None = None
    from_event: str | None = Field(default=None, description="a key of the triggering event's data")
    min: float | None = None
    max: float | None = None
    choices: list[str | int | float | bool] | None = None
    allowed_prefixes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _has_a_source(self) -> InputSpec:
        if self.value is None and self.from_event is None:
            raise ValueError("an input needs 'value' or 'from_event' (or both: 'value' is the fallback)")
        if self.type != "literal" and self.value is not None and not isinstance(self.value, str):
            raise ValueError(f"an input of type {self.type} takes a path or asset reference as 'value'")
        if self.type != "literal" and (self.min is not None or self.max is not None or self.choices is not None):
            raise ValueError("min, max and choices bound literal inputs; this input is a path or asset")
        if self.type == "literal" and self.allowed_prefixes:
            raise ValueError("allowed_prefixes is for path inputs taken from_event; this input is a literal")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.type == "literal" and self.value is not None:
            if self.choices is not None and self.value not in self.choices:
                raise ValueError(f"value {self.value!r} is not one of its own choices")
            value = self.value
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if (self.min is not None or self.max is not None) and not number:
                raise ValueError(f"min and max bound numbers; value {value!r} is not one")
            if isinstance(value, int | float) and (
                (self.min is not None and value < self.min) or (self.max is not None and value > self.max)
            ):
                raise ValueError(f"value {value} is outside its own min {self.min} and max {self.max}")
        for prefix in self.allowed_prefixes:
            if not re.match(r"^(https|abfss|wasbs|azureml)://[^/\s]+/", prefix):
                raise ValueError(
                    f"allowed prefix {prefix!r} must be a URI up to at least its host and a slash, e.g. "
                    "'https://mydata.blob.core.windows.net/training/'"
                )
        if self.type != "literal" and isinstance(self.value, str) and self.value.startswith("azureml:"):
            ref = self.value.removeprefix("azureml:")
            name, at, label = ref.partition("@")
            if at and "/" not in ref and label != LATEST:
                raise ValueError(_label_problem(self.value, name, label))
        return self


def _input(value: Any) -> Any:
    return value if isinstance(value, (Mapping, InputSpec)) else {"value": value}


class DriftRule(Strict):
    monitors: list[str] = Field(default_factory=list, description="SDK v1 DataDriftName or SDK v2 monitor name")
    signals: list[str] = Field(default_factory=list, description="SDK v2 model-monitoring signal names")
    min_coefficient: float | None = Field(default=None, ge=0, le=1)
    classes: Annotated[dict[str, str], BeforeValidator(checked_classes)] = Field(
        default_factory=dict, description="SDK v2 signal name -> retrain, retrain_now, veto or record"
    )

    @model_validator(mode="after")
    def _classes(self) -> DriftRule:
        problem = class_problem(self.classes, self.signals, self.monitors)
        if problem:
            raise ValueError(problem)
        return self


_ROLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,119}$")


class Approval(Strict):
    """``retrain.approval`` (and the keys ``deploy.approval`` shares): the decision waits, recorded
    ``pending`` and holding the model's slot, for a person to approve or reject it (:mod:`handlers.approvals`,
    docs/policy.md, Approvals)."""

    required: bool = True
    expires: Duration = Field(
        default=timedelta(hours=24), description="how long a pending decision waits before the reconciler releases it"
    )
    four_eyes: bool = Field(
        default=True, description="the approver is a signed-in identity, and not the caller who asked"
    )
    approver_role: str | None = Field(
        default=None, description="the app role a signed-in caller needs to approve or reject (None: any operator)"
    )

    @field_validator("expires")
    @classmethod
    def _expires(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= value <= timedelta(days=30):
            raise ValueError("expires must be from 1m to 30d, e.g. '24h'; a pending decision holds the model's slot")
        return value

    @field_validator("approver_role")
    @classmethod
    def _role(cls, value: str | None) -> str | None:
        if value is not None and not _ROLE.match(value):
            raise ValueError(
                f"{value[:60]!r} is not an app role value; write the role's value as the app registration declares "
                "it, without spaces, e.g. 'Retrain.Approver'"
            )
        return value


class ApprovalRule(Approval):
    """``deploy.approval``: a candidate that passed the gate waits, holding the model's rollout slot,
    for a person to approve or reject it; ``promote``: a rollout holds before its promotion."""

    promote: bool = Field(
        default=False, description="a rollout holds before its promotion until an operator promotes it"
    )


class RetrainRule(Strict):
    pipeline: Annotated[PipelineRef, BeforeValidator(_pipeline)]
    experiment: str | None = None
    compute: str | None = None
    inputs: dict[str, Annotated[InputSpec, BeforeValidator(_input)]] = Field(default_factory=dict)
    overridable: list[str] = Field(default_factory=list)
    cooldown: Duration | None = None
    daily_budget: int | None = Field(default=None, ge=0)
    approval: Approval | None = Field(default=None, description="retrains wait for a person's approval")
    on: OnRule = Field(default_factory=OnRule, description="new data and upstream runs that start a retrain")
    max_age: Duration | None = Field(
        default=None, description="the reconciler retrains once the champion the endpoint serves is older than this"
    )
    worthiness: bool = Field(
        default=True,
        description="skip a drift or alert retrain when the champion's training data has no newer version",
    )

    @model_validator(mode="before")
    @classmethod
    def _on_key(cls, data: Any) -> Any:
        """YAML 1.1 (PyYAML) reads a bare ``on:`` key as the boolean true: it means ``on``."""
        if isinstance(data, Mapping) and True in data and "on" not in data:
            return {("on" if key is True else key): value for key, value in data.items()}
        return data

    @field_validator("max_age")
    @classmethod
    def _max_age(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and not timedelta(hours=1) <= value <= timedelta(days=3650):
            raise ValueError(
                "max_age must be from 1h to 3650d, e.g. '30d': the champion's age is its model version's creation "
                "time, read by the reconciler"
            )
        return value

    @model_validator(mode="after")
    def _overridable_are_inputs(self) -> RetrainRule:
        unknown = [name for name in self.overridable if name not in self.inputs]
        if unknown:
            raise ValueError(
                f"overridable names {', '.join(map(repr, unknown))} which are not inputs; "
                f"declare them under 'inputs' or remove them (inputs: {', '.join(self.inputs) or 'none'})"
            )
        return self


class CandidateRule(Strict):
    """Finished runs that are deploy candidates besides those the service started itself."""

    experiments: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)


class DeployRule(Strict):
    endpoint: str | None = Field(default=None, description="the managed online endpoint the model is rolled out on")
    batch_endpoint: BatchEndpointRule | None = Field(
        default=None, description="the batch endpoint whose default deployment the candidate becomes"
    )
    approval: ApprovalRule | None = Field(default=None, description="deploys wait for a person's approval")
    on_registration: bool = False
    gate: GateRule | None = None
    model_output: str = Field(
        default="model",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the pipeline output holding the model; registered as a new version of the model "
        "(azureml://jobs/<run>/outputs/<model_output>) when the finished run registered none",
    )
    rollout: RolloutRule = Field(default_factory=RolloutRule)
    instance_count: int | None = Field(
        default=None, ge=1, description="instances the candidate starts with (default: as many as the live deployment)"
    )
    retire_after: Duration = Field(
        default=timedelta(hours=24),
        description="how long a demoted deployment is kept at 0% for a fast rollback, and a rolled-back or failed "
        "candidate at 0%, before the reconciler deletes it",
    )
    keep_previous: int = Field(
        default=1,
        ge=0,
        description="at most this many demoted deployments are kept at 0% (rolled-back candidates are not counted)",
    )

    @property
    def target(self) -> str:
        """The endpoint candidates go to: the online ``endpoint`` or the ``batch_endpoint``'s name."""
        if self.batch_endpoint is not None:
            return self.batch_endpoint.name
        assert self.endpoint is not None  # _one_endpoint
        return self.endpoint

    @model_validator(mode="after")
    def _one_endpoint(self) -> DeployRule:
        if (self.endpoint is None) == (self.batch_endpoint is None):
            raise ValueError(
                "name one endpoint: 'endpoint: <online endpoint>' for a model served online, or "
                "'batch_endpoint: {name: <batch endpoint>}' for a model scored in batch"
                + (", not both" if self.endpoint is not None else "")
            )
        if self.batch_endpoint is not None:
            online_only = [
                key
                for key, set_ in (
                    ("rollout.mirror", self.rollout.mirror is not None),
                    ("rollout.smoke", self.rollout.smoke is not None),
                    ("rollout.guards", bool(self.rollout.guards.queries or self.rollout.guards.alerts)),
                    ("approval.promote", self.approval is not None and self.approval.promote),
                )
                if set_
            ]
            if online_only:
                raise ValueError(
                    f"batch_endpoint: {', '.join(online_only)} judge(s) live online traffic, which a batch endpoint "
                    "does not have; remove them (a batch candidate's default is switched once it is provisioned)"
                )
        return self

    @field_validator("endpoint")
    @classmethod
    def _endpoint_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENDPOINT.match(value):
            raise ValueError(
                f"{value!r} is not a valid online endpoint name; use 3-32 letters, digits and dashes, "
                "starting with a letter"
            )
        return value


class ModelPolicy(Strict):
    drift: DriftRule = Field(default_factory=DriftRule)
    alerts: list[str] = Field(default_factory=list, description="Azure Monitor alert rule names that retrain the model")
    alert_targets: list[str] = Field(
        default_factory=list,
        description="resource ids besides the workspace (and what is in it) whose alerts may retrain the model",
    )
    retrain: RetrainRule | None = None
    candidates: CandidateRule = Field(default_factory=CandidateRule)
    deploy: DeployRule | None = None
    environment: EnvironmentRule | None = Field(
        default=None, description="the Azure ML registry the model's promotions come from (docs/environments.md)"
    )
    freeze: list[FreezeWindow] = Field(
        default_factory=list, description="freeze windows of this model (and the defaults')"
    )

    @model_validator(mode="after")
    def _age_has_a_champion(self) -> ModelPolicy:
        if self.retrain is None or self.retrain.max_age is None:
            return self
        if self.deploy is None or self.deploy.endpoint is None:
            raise ValueError(
                "retrain.max_age judges the champion the model's online endpoint serves: name it under "
                "deploy.endpoint, or remove retrain.max_age (a batch endpoint's champion is not judged by age)"
            )
        return self

    @model_validator(mode="after")
    def _picks_up_to_deploy(self) -> ModelPolicy:
        env = self.environment
        if env is None or env.upstream is None:
            return self
        if self.deploy is None:
            raise ValueError(
                "environment.upstream picks up registry versions to roll out, and the model has no deploy section: "
                "add deploy (its endpoint, gate and rollout) or remove environment.upstream"
            )
        if self.deploy.batch_endpoint:
            raise ValueError(
                "environment.upstream: picking up registry versions for a batch endpoint is not built; remove "
                "environment.upstream (deploy the registry's version by hand) or serve the model online"
            )
        return self


class Defaults(Strict):
    cooldown: Duration = timedelta(hours=6)
    daily_budget: int = Field(default=4, ge=0)
    freeze: list[FreezeWindow] = Field(default_factory=list, description="freeze windows of every model")


class Policy(Strict):
    version: Literal[1] = 1
    defaults: Defaults = Field(default_factory=Defaults)
    models: dict[str, ModelPolicy]

    @field_validator("models")
    @classmethod
    def _model_names(cls, models: dict[str, ModelPolicy]) -> dict[str, ModelPolicy]:
        for name in models:
            if not _NAME.match(name):
                raise ValueError(f"{name!r} is not an Azure ML model name; use letters, digits, '-', '_' and '.'")
        if not models:
            raise ValueError("no models; add at least one model under 'models'")
        return models

    def cooldown(self, model: str) -> timedelta:
        rule = self.models[model].retrain
        return rule.cooldown if rule and rule.cooldown is not None else self.defaults.cooldown

    def freeze_windows(self, model: str) -> tuple[FreezeWindow, ...]:
        """The windows that freeze ``model``: the defaults' and its own."""
        mp = self.models.get(model)
        return (*self.defaults.freeze, *(mp.freeze if mp is not None else ()))

    def daily_budget(self, model: str) -> int:
        rule = self.models[model].retrain
        return rule.daily_budget if rule and rule.daily_budget is not None else self.defaults.daily_budget
