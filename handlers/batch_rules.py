"""``deploy.batch_endpoint``: a model scored by an Azure ML **batch** endpoint (docs/rollouts.md, Batch
endpoints). Its candidate becomes a batch deployment beside the endpoint's default one; once
provisioned, the endpoint's ``defaults.deployment_name`` is switched to it (the promotion), and an
operator's rollback switches it back.

With ``compare``, the switch waits for a comparison: the champion (the default deployment) and the
candidate each score the same data asset in a batch job, and the gate's rule (:mod:`handlers.gate`)
judges the metrics both jobs logged with MLflow. A candidate that does not win is a recorded skip, never
switched (docs/rollouts.md, "The comparison job")::

    batch_endpoint:
      name: churn-batch
      compare:
        data: azureml:churn-recent-labelled:12
        metrics:
          - {name: auc, margin: 0.005}
"""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import Field, field_validator, model_validator

from handlers.gate_rules import GateRule
from handlers.policy_base import Duration, Strict, asset_version

# Batch endpoint names: 3-32 characters, a letter first, letters, digits and dashes (Azure ML's endpoint
# naming rules, the same as an online endpoint's).
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")
SCORING_STEP = "batchscoring"  # the step of a model deployment's batch job that runs the scoring script


class CompareRule(GateRule):
    """The comparison job (``batch_endpoint.compare``): the champion's and the candidate's batch
    deployments each score ``data`` (a ``uri_file`` or ``uri_folder`` data asset version, both the same
    input); the metrics each job logged with MLflow (in its step ``step``; ``batchscoring`` is the step a
    model deployment's job runs its scoring script in) are judged by the gate's keys beside them
    (``metric`` or ``metrics``, ``require``, margins and floors: :class:`handlers.gate_rules.GateRule`),
    the champion's job as the champion. Jobs not both ended after ``timeout`` fail the comparison."""

    data: str = Field(description="the data asset version both deployments score: azureml:<name>:<version>")
    step: str | None = Field(
        default=SCORING_STEP, description="the step of the batch job whose MLflow metrics are read"
    )
    timeout: Duration = Field(default=timedelta(hours=6), description="how long both jobs may take")

    @field_validator("data")
    @classmethod
    def _asset(cls, value: str) -> str:
        why = "a uri_file or uri_folder asset both deployments score; a version, so both read the same input"
        return asset_version(value, "churn-recent-labelled:12", why)

    @field_validator("step")
    @classmethod
    def _step(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                f"an empty step; write the display name of the batch job's step whose MLflow run logged the metrics, "
                f"or leave it out for {SCORING_STEP!r} (the step that runs a model deployment's scoring script)"
            )
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=5) <= value <= timedelta(days=7):
            raise ValueError("the comparison's timeout must be between 5m and 7d; write it like '6h'")
        return value

    @model_validator(mode="after")
    def _mlflow_only(self) -> CompareRule:
        if self.source != "mlflow":
            raise ValueError(
                f"source: {self.source}: a comparison reads the MLflow metrics its batch jobs logged; remove 'source'"
            )
        return self

    @property
    def asset(self) -> tuple[str, str]:
        """The data asset's name and version."""
        _, name, version = self.data.split(":")
        return name, version


class BatchEndpointRule(Strict):
    """The batch endpoint a model's candidates are deployed to, by name; ``compare``: the comparison job
    a candidate must win before the endpoint's default is switched to it (None: switched once provisioned)."""

    name: str = Field(description="the batch endpoint's name in the workspace")
    compare: CompareRule | None = Field(
        default=None, description="champion and candidate score the same data; the gate judges both jobs' metrics"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid batch endpoint name; use 3-32 letters, digits and dashes, "
                "starting with a letter"
            )
        return value
