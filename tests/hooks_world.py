"""The azd hooks' test world (infra/hooks/*.sh run with sh against a fake ``az`` and ``azd`` first on PATH,
:mod:`tests.fake_azcli`): a copy of what the hooks read and the fake tools' state, for the tests of the hooks
(tests/test_hooks_*.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests import fake_azcli
from tests.conftest import REPO, load_module

HOOKS = REPO / "infra" / "hooks"
SUB = "00000000-0000-0000-0000-000000000001"
WORKSPACE_ID = f"/subscriptions/{SUB}/resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/ws1"
OTHER_UAI = (
    f"/subscriptions/{SUB}/resourceGroups/rg-other/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-other"
)
NAMES = ["retrain-abc-ml-events", "retrain-abc-monitor-breach", "retrain-abc-run-failed"]
VALID_POLICY = (REPO / "examples" / "policy.yaml").read_text(encoding="utf-8")


hooklib = load_module("hooklib", HOOKS / "hooklib.py")


def portal_topic(source: str = WORKSPACE_ID, name: str = "ws1-events") -> dict[str, Any]:
    """A system topic as `az eventgrid system-topic list` shows one created from the portal's Events blade."""
    return {
        "name": name,
        "resourceGroup": "rg-ml",
        "location": "westeurope",
        "source": source,
        "topicType": "Microsoft.MachineLearningServices.Workspaces",
        "identity": {
            "type": "SystemAssigned, UserAssigned",
            "principalId": "11111111-1111-1111-1111-111111111111",
            "userAssignedIdentities": {OTHER_UAI: {"principalId": "2222", "clientId": "3333"}},
        },
        "tags": {"owner": "data-platform", "cost-center": "42"},
    }


class Project:
    """A copy of what the hooks read (hooks, policy, .funcignore) and the fake tools' world."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.world_file = root / "world.json"
        (root / "infra").mkdir()
        subprocess.run(["cp", "-r", str(HOOKS), str(root / "infra" / "hooks")], check=True)
        (root / ".funcignore").write_text((REPO / ".funcignore").read_text(encoding="utf-8"), encoding="utf-8")
        (root / "policy.yaml").write_text(VALID_POLICY, encoding="utf-8")
        self.world: dict[str, Any] = {
            "subscription": SUB,
            "workspace": {
                "name": "ws1",
                "resourceGroup": "rg-ml",
                "id": WORKSPACE_ID,
                "properties": {"publicNetworkAccess": "Enabled"},
            },
            "identities": [OTHER_UAI],
            "topics": [],
            "event_subscriptions": {},
            "functions": [],
            "created_topic": {**portal_topic(name="evgt-ws1"), "identity": {}, "tags": {}},
            "subscription_names": NAMES,
            "env": {},
        }
        self.env = {
            "AZURE_ENV_NAME": "test",
            "AZURE_SUBSCRIPTION_ID": SUB,
            "AZUREML_WORKSPACE_NAME": "ws1",
            "AZUREML_RESOURCE_GROUP": "rg-ml",
            "RETRAIN_HOOK_PYTHON": sys.executable,
            "PYTHONPATH": str(REPO),  # the hooks validate with the code under test, whatever the venv installed
            "HOME": str(root),
            **fake_azcli.install(root / "bin", self.world_file),
        }

    def run(self, hook: str, **env: str) -> subprocess.CompletedProcess[str]:
        self.world_file.write_text(json.dumps(self.world), encoding="utf-8")
        done = subprocess.run(
            ["sh", f"./infra/hooks/{hook}.sh"],
            cwd=self.root, env={**self.env, **env}, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        self.world = json.loads(self.world_file.read_text(encoding="utf-8"))
        return done

    def calls(self, tool: str, *prefix: str) -> list[list[str]]:
        return [c[1:] for c in self.world.get("calls", []) if c[0] == tool and c[1 : 1 + len(prefix)] == list(prefix)]

    @property
    def azd_env(self) -> dict[str, str]:
        env: dict[str, str] = self.world["env"]
        return env
