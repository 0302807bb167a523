"""The test world of a batch model (``deploy.batch_endpoint``): the example policy's model scored by the
batch endpoint ``diabetes-batch`` (with a comparison job when asked), in the one-workspace Azure world
(tests/azure_world.py) whose fake ARM answers batch endpoints (tests/fake_batch.py)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from handlers.policy import Policy
from handlers.policy_file import parse_policy
from handlers.records import DecisionRecord
from tests.azure_world import MODEL, AzureWorld
from tests.conftest import REPO
from tests.crashes import DiesAfterSettingTraffic, WorkerDied
from tests.rollouts import Reads

BATCH = "diabetes-batch"
RECENT = "diabetes-recent-labelled"  # the data asset a comparison scores (a uri_folder, version 4)


def batch_policy(compare: dict[str, Any] | None = None) -> Policy:
    """The example policy, its model scored by the batch endpoint ``diabetes-batch``; ``compare``: its
    ``batch_endpoint.compare``."""
    raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
    deploy = raw["models"][MODEL]["deploy"]
    del deploy["endpoint"]
    deploy["batch_endpoint"] = {"name": BATCH, **({"compare": compare} if compare else {})}
    deploy["rollout"] = {k: v for k, v in deploy["rollout"].items() if k not in ("smoke", "mirror", "guards")}
    return parse_policy(yaml.safe_dump(raw))


class Batch(Reads):
    """The workspace with the batch endpoint, its default ``nightly`` serving version 3 (r2 0.52), and
    the comparison's data asset."""

    def __init__(self, azure: AzureWorld) -> None:
        self.azure = azure
        azure.arm.batch.add_endpoint(BATCH, default="nightly")
        azure.arm.batch.add_deployment(BATCH, "nightly", model=(MODEL, "3"))
        azure.arm.add_data(RECENT, "4", kind="uri_folder")

    def candidate(self, r2: str = "0.61", **kw: Any) -> DecisionRecord:
        [deploy] = self.azure.deliver(self.azure.finished_run(r2=r2, **kw)).decisions
        return deploy

    def default(self) -> str | None:
        return self.azure.arm.batch.default(BATCH)

    def state(self, **worker: Any) -> str:
        [entry] = self.azure.new_worker(**worker).reconcile().rollouts
        return str(entry["state"])

    def switch_dies_then_the_next_pass_finishes(self, name: str) -> DecisionRecord:
        """A pass whose worker dies right after switching the default to ``name``, then the next pass:
        it finds the default switched and records the promotion, once, without switching again."""
        azure = self.azure
        with pytest.raises(WorkerDied):
            self.state(actions=DiesAfterSettingTraffic(azure.actions))
        assert self.default() == name and self.records("promote") == [] and self.in_flight()
        switches = len(azure.arm.requests_to("PUT", r"^batchEndpoints/[^/]+$"))
        azure.provisioned()
        assert self.state() == "promoted"
        assert len(azure.arm.requests_to("PUT", r"^batchEndpoints/[^/]+$")) == switches  # found so, not sent again
        [promote] = self.records("promote")
        assert not self.in_flight()
        return promote
