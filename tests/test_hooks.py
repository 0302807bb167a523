"""The azd hooks (infra/hooks/*.sh), run with sh against a fake ``az`` and ``azd`` first on PATH.

What they must do on a real subscription: reuse the workspace's existing system topic without
rewriting it; stop a deploy whose policy is missing or invalid with the policy's own message; and
leave RETRAIN_EVENT_SUBSCRIPTIONS true only once the subscriptions exist, so that running again
after any failure converges.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


# ------------------------------------------------------------------ preprovision: the system topic


def test_an_existing_topic_is_found_and_reused_with_its_identities_and_tags(project: Project) -> None:
    project.world["topics"] = [portal_topic(source="/subscriptions/x/other/workspace"), portal_topic()]
    project.world["topics"][0]["name"] = "someone-elses"
    done = project.run("preprovision")
    assert done.returncode == 0, done.stderr
    env = project.azd_env
    assert env["RETRAIN_SYSTEM_TOPIC_NAME"] == "ws1-events"
    assert env["RETRAIN_SYSTEM_TOPIC_RESOURCE_GROUP"] == "rg-ml"
    assert env["RETRAIN_SYSTEM_TOPIC_CREATED"] == "false"
    state = json.loads(base64.b64decode(env["RETRAIN_SYSTEM_TOPIC_STATE"]))
    assert state == {
        "location": "westeurope",
        "identityType": "SystemAssigned, UserAssigned",
        "userAssignedIdentities": {OTHER_UAI: {}},
        "tags": {"owner": "data-platform", "cost-center": "42"},
    }
    # The hook only reads: nothing of the topic is written outside the deployment's merge.
    assert [c for c in project.calls("az") if c[:2] == ["eventgrid", "system-topic"] and c[2] != "list"] == []


def test_the_topic_is_matched_by_source_whatever_the_casing_of_the_resource_id(project: Project) -> None:
    project.world["topics"] = [portal_topic(source=WORKSPACE_ID.upper())]
    assert project.run("preprovision").returncode == 0
    assert project.azd_env["RETRAIN_SYSTEM_TOPIC_NAME"] == "ws1-events"


def test_without_a_topic_the_deployment_creates_one_and_remembers_it_did(project: Project) -> None:
    project.world["topics"] = [portal_topic(source="/subscriptions/x/another/workspace")]
    done = project.run("preprovision")
    assert done.returncode == 0, done.stderr
    env = project.azd_env
    assert (env["RETRAIN_SYSTEM_TOPIC_NAME"], env["RETRAIN_SYSTEM_TOPIC_STATE"]) == ("", "")
    assert env["RETRAIN_SYSTEM_TOPIC_CREATED"] == "true"


def test_a_topic_this_environment_created_stays_marked_as_its_own_on_the_next_provision(project: Project) -> None:
    project.world["topics"] = [portal_topic(name="evgt-ws1")]
    assert project.run("preprovision", RETRAIN_SYSTEM_TOPIC_CREATED="true").returncode == 0
    assert "RETRAIN_SYSTEM_TOPIC_CREATED" not in project.azd_env
    assert project.azd_env["RETRAIN_SYSTEM_TOPIC_NAME"] == "evgt-ws1"


def test_a_workspace_that_does_not_exist_stops_the_provision_with_what_to_check(project: Project) -> None:
    done = project.run("preprovision", AZUREML_WORKSPACE_NAME="ws-typo")
    assert done.returncode != 0
    assert "workspace ws-typo not found in resource group rg-ml" in done.stderr
    assert project.calls("az", "eventgrid") == []


def test_an_unset_workspace_name_says_which_azd_env_value_to_set(project: Project) -> None:
    env = dict(project.env)
    del env["AZUREML_WORKSPACE_NAME"]
    project.env = env
    done = project.run("preprovision")
    assert done.returncode != 0
    assert "AZUREML_WORKSPACE_NAME is not set; run: azd env set AZUREML_WORKSPACE_NAME" in done.stderr


# ------------------------------------------------------------------ the policy: preprovision and predeploy


@pytest.mark.parametrize("hook", ["predeploy", "preprovision"])
def test_a_missing_policy_stops_with_the_policys_message(project: Project, hook: str) -> None:
    done = project.run(hook, RETRAIN_POLICY_PATH="policies/prod.yaml")
    assert done.returncode != 0
    assert "policies/prod.yaml: cannot read the policy file (No such file or directory)" in done.stderr
    assert "azd env set RETRAIN_POLICY_PATH" in done.stderr
    assert project.calls("azd", "provision") == [] and project.calls("az", "eventgrid") == []


def test_an_invalid_policy_stops_the_deploy_with_the_key_and_the_fix(project: Project) -> None:
    (project.root / "policy.yaml").write_text(
        VALID_POLICY.replace("cooldown: 6h", "cooldown: soon", 1), encoding="utf-8"
    )
    done = project.run("predeploy")
    assert done.returncode != 0
    assert "policy.yaml: defaults.cooldown" in done.stderr, done.stderr
    assert "is not valid (above)" in done.stderr


def test_a_valid_policy_lets_the_deploy_go_on(project: Project) -> None:
    done = project.run("predeploy")
    assert done.returncode == 0, done.stderr
    assert "policy.yaml: valid; models: sklearn_regression_model, churn-classifier" in done.stdout


def test_a_policy_the_package_leaves_out_stops_the_deploy(project: Project) -> None:
    (project.root / "tests").mkdir()
    (project.root / "tests" / "policy.yaml").write_text(VALID_POLICY, encoding="utf-8")
    done = project.run("predeploy", RETRAIN_POLICY_PATH="tests/policy.yaml")
    assert done.returncode != 0
    assert "tests/policy.yaml is left out of the function package by the line 'tests/' of .funcignore" in done.stderr


def test_preprovision_passes_no_traffic_log_endpoints_for_a_policy_on_metrics(project: Project) -> None:
    assert project.run("preprovision").returncode == 0
    assert project.azd_env["RETRAIN_TRAFFIC_LOG_ENDPOINTS"] == ""
    assert project.azd_env["RETRAIN_NEW_DATA_STORAGE_ACCOUNT_ID"] == project.azd_env["RETRAIN_NEW_DATA_PREFIXES"] == ""


def test_preprovision_passes_the_storage_account_and_prefixes_the_policy_retrains_on(project: Project) -> None:
    account = f"/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/mydata"
    blobs = f"        data:\n          blobs:\n            - {{account: '{account}', container: training, prefix: diabetes/}}\n"
    anchor = "      daily_budget: 3\n"
    (project.root / "policy.yaml").write_text(VALID_POLICY.replace(anchor, anchor + "      on:\n" + blobs, 1))
    done = project.run("preprovision")
    assert done.returncode == 0, done.stderr
    assert project.azd_env["RETRAIN_NEW_DATA_STORAGE_ACCOUNT_ID"] == account
    assert project.azd_env["RETRAIN_NEW_DATA_PREFIXES"] == "training/diabetes/"


def test_the_endpoints_of_models_whose_rollout_health_reads_logs_get_the_traffic_log() -> None:
    policy = {
        "models": {
            "a": {"deploy": {"endpoint": "ep-a", "rollout": {"health": {"source": "logs"}}}},
            "b": {"deploy": {"endpoint": "ep-b", "rollout": {"health": {"source": "metrics"}}}},
            "c": {"deploy": {"endpoint": "ep-c"}},
            "d": {"deploy": {"endpoint": "ep-a", "rollout": {"health": {"source": "logs"}}}},
            "e": {"retrain": {}},
        }
    }
    assert hooklib.logs_endpoints(policy) == ["ep-a"]


@pytest.mark.parametrize(
    ("path", "excluded"),
    [("policy.yaml", None), ("policies/prod.yaml", None), ("tests/p.yaml", "tests/"), ("infra/p.yaml", "infra/")],
)
def test_funcignore_lines_are_matched_as_gitignore_matches_them(path: str, excluded: str | None) -> None:
    assert hooklib.excluded_by(path, (REPO / ".funcignore").read_text(encoding="utf-8")) == excluded


# ------------------------------------------------------------------ postdeploy: the subscriptions


def deployed(project: Project, **world: Any) -> Project:
    """After the first provision and deploy: the topic exists without subscriptions, the code is deployed."""
    project.world.update({"topics": [project.world["created_topic"]], "functions": ["on_workspace_event"]})
    project.world.update(world)
    project.env.update(
        {
            "AZURE_RESOURCE_GROUP": "rg-test",
            "AZURE_FUNCTION_APP_NAME": "func-retrain-abc",
            "RETRAIN_SYSTEM_TOPIC_NAME": "evgt-ws1",
            "RETRAIN_EVENT_SUBSCRIPTION_NAMES": ",".join(NAMES),
            "RETRAIN_INDEX_INTERVAL": "0",
            "RETRAIN_INDEX_ATTEMPTS": "3",
        }
    )
    return project


def test_the_first_deploy_provisions_the_subscriptions_and_only_then_marks_them(project: Project) -> None:
    deployed(project)
    done = project.run("postdeploy")
    assert done.returncode == 0, done.stderr
    assert project.world["event_subscriptions"]["evgt-ws1"] == NAMES
    assert project.azd_env["RETRAIN_EVENT_SUBSCRIPTIONS"] == "true"
    assert len(project.calls("azd", "provision")) == 1
    shows = [i for i, c in enumerate(project.world["calls"]) if c[1:4] == ["functionapp", "function", "show"]]
    provision = next(i for i, c in enumerate(project.world["calls"]) if c[:2] == ["azd", "provision"])
    assert shows and shows[-1] < provision  # indexed before Event Grid validates the destination


def test_a_failed_provision_leaves_the_flag_unset_and_the_next_run_converges(project: Project) -> None:
    deployed(project, provision_fails=True)
    done = project.run("postdeploy")
    assert done.returncode != 0
    assert "RETRAIN_EVENT_SUBSCRIPTIONS is false again" in done.stderr
    assert project.azd_env["RETRAIN_EVENT_SUBSCRIPTIONS"] == "false"
    assert project.world["event_subscriptions"] == {}
    # azd passes the environment's values to the hook: the next run sees the flag the last one left.
    project.world["provision_fails"] = False
    done = project.run("postdeploy", RETRAIN_EVENT_SUBSCRIPTIONS=project.azd_env["RETRAIN_EVENT_SUBSCRIPTIONS"])
    assert done.returncode == 0, done.stderr
    assert project.world["event_subscriptions"]["evgt-ws1"] == NAMES
    assert project.azd_env["RETRAIN_EVENT_SUBSCRIPTIONS"] == "true"


def test_a_flag_left_true_by_an_interrupted_run_does_not_hide_missing_subscriptions(project: Project) -> None:
    deployed(project)
    done = project.run("postdeploy", RETRAIN_EVENT_SUBSCRIPTIONS="true")
    assert done.returncode == 0, done.stderr
    assert len(project.calls("azd", "provision")) == 1
    assert project.world["event_subscriptions"]["evgt-ws1"] == NAMES


def test_the_hook_waits_for_the_function_to_be_indexed_before_provisioning(project: Project) -> None:
    deployed(project, index_after=2)
    done = project.run("postdeploy")
    assert done.returncode == 0, done.stderr
    assert "waiting for on_workspace_event to be indexed" in done.stdout
    assert len(project.calls("az", "functionapp", "function", "show")) == 3


def test_a_function_never_indexed_stops_before_event_grid_refuses_the_destination(project: Project) -> None:
    deployed(project, functions=[])
    done = project.run("postdeploy")
    assert done.returncode != 0
    assert "on_workspace_event is not indexed on func-retrain-abc after 3 checks" in done.stderr
    assert project.calls("azd", "provision") == []
    assert project.azd_env.get("RETRAIN_EVENT_SUBSCRIPTIONS") != "true"


def test_with_the_subscriptions_in_place_a_deploy_changes_nothing(project: Project) -> None:
    deployed(project, event_subscriptions={"evgt-ws1": NAMES})
    done = project.run("postdeploy", RETRAIN_EVENT_SUBSCRIPTIONS="true")
    assert done.returncode == 0, done.stderr
    assert "nothing to do" in done.stdout
    assert project.calls("azd") == []


def test_ci_skips_the_subscriptions_without_calling_azure(project: Project) -> None:
    done = project.run("postdeploy", RETRAIN_SKIP_EVENT_SUBSCRIPTIONS="true")
    assert done.returncode == 0, done.stderr
    assert project.world.get("calls", []) == []


def test_azure_yaml_runs_every_hook_in_both_shells_and_each_file_exists() -> None:
    import yaml

    hooks = yaml.safe_load((REPO / "azure.yaml").read_text(encoding="utf-8"))["hooks"]
    assert set(hooks) == {"preprovision", "predeploy", "postdeploy", "predown"}
    for name, hook in hooks.items():
        assert hook["posix"] == {"shell": "sh", "run": f"./infra/hooks/{name}.sh", "continueOnError": False}
        assert hook["windows"] == {"shell": "pwsh", "run": f"./infra/hooks/{name}.ps1", "continueOnError": False}
        assert (HOOKS / f"{name}.sh").is_file() and (HOOKS / f"{name}.ps1").is_file()


def test_what_the_hooks_write_is_what_the_deployment_reads_and_what_they_read_it_writes() -> None:
    """preprovision's `azd env set` names reach main.bicep through main.parameters.json; postdeploy
    reads the deployment's outputs (azd writes them into the environment)."""
    import re

    from tests.bicep import bicep

    parameters = (REPO / "infra" / "main.parameters.json").read_text(encoding="utf-8")
    consumed = set(re.findall(r"\$\{([A-Z0-9_]+)", parameters))
    hook = (HOOKS / "preprovision.sh").read_text(encoding="utf-8")
    written = set(re.findall(r"(?m)^[^\"'\n]*\bazd env set ([A-Z0-9_]+)", hook))  # commands, not messages
    assert {"RETRAIN_SYSTEM_TOPIC_STATE", "RETRAIN_TRAFFIC_LOG_ENDPOINTS"} <= written
    assert written - {"RETRAIN_SYSTEM_TOPIC_CREATED"} <= consumed  # CREATED is a note for removal
    assert "RETRAIN_EVENT_SUBSCRIPTIONS" in consumed
    outputs = set(bicep("main.bicep")["outputs"])
    postdeploy = (HOOKS / "postdeploy.sh").read_text(encoding="utf-8")
    match = re.search(r"^require (.+)$", postdeploy, re.MULTILINE)
    assert match
    required = set(match[1].split())
    assert required - {"AZURE_SUBSCRIPTION_ID"} <= outputs  # azd itself keeps AZURE_SUBSCRIPTION_ID
    assert {"RETRAIN_SYSTEM_TOPIC_RESOURCE_GROUP", "RETRAIN_EVENT_SUBSCRIPTION_NAMES"} <= outputs


def test_a_topic_without_identity_or_tags_is_passed_on_as_having_none() -> None:
    bare = {k: v for k, v in portal_topic().items() if k not in ("identity", "tags")}
    name, group, state = hooklib.topic(WORKSPACE_ID, [bare])
    assert (name, group) == ("ws1-events", "rg-ml")
    assert json.loads(base64.b64decode(state)) == {
        "location": "westeurope",
        "identityType": "None",
        "userAssignedIdentities": {},
        "tags": {},
    }
    assert hooklib.topic(WORKSPACE_ID, [portal_topic(source=WORKSPACE_ID + "/child")]) == []


def test_an_identity_listed_twice_under_two_casings_is_passed_once(project: Project) -> None:
    """Resource ids are case-insensitive, JSON keys are not: passing both would make the PUT name
    the same identity twice."""
    topic = portal_topic(name="evgt-ws1")
    topic["identity"]["userAssignedIdentities"] = {OTHER_UAI: {}, OTHER_UAI.upper(): {}}
    project.world["topics"] = [topic]
    assert project.run("preprovision").returncode == 0
    state = json.loads(base64.b64decode(project.azd_env["RETRAIN_SYSTEM_TOPIC_STATE"]))
    assert state["userAssignedIdentities"] == {OTHER_UAI: {}}


# ------------------------------------------------------------------ several environments on one topic


def uai(name: str, group: str = "rg-other") -> str:
    return (
        f"/subscriptions/{SUB}/resourceGroups/{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )


def provision_environment(project: Project, name: str) -> subprocess.CompletedProcess[str]:
    """`azd up` of one more environment: its own azd environment, preprovision, then the deployment
    (the fake's `azd provision` PUTs the topic as events.bicep does and checks Event Grid's limits)."""
    project.world["env"] = {}
    done = project.run("preprovision", AZURE_ENV_NAME=name)
    if done.returncode != 0:
        return done
    project.world_file.write_text(json.dumps(project.world), encoding="utf-8")
    provision = subprocess.run(
        [str(project.root / "bin" / "azd"), "provision", "--no-prompt"],
        env={**project.env, "AZURE_ENV_NAME": name}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    project.world = json.loads(project.world_file.read_text(encoding="utf-8"))
    return provision


def test_three_environments_share_a_topic_that_already_carries_two_user_assigned_identities(
    project: Project,
) -> None:
    """A system topic holds one system-assigned and at most two user-assigned identities: the
    environments dead-letter with the system-assigned one and add none of their own."""
    team = [uai("id-team-a"), uai("id-team-b")]
    topic = portal_topic()
    topic["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {i: {"principalId": "p"} for i in team}}
    project.world.update(topics=[topic], identities=team)
    for name in ("prod", "staging", "dev"):
        done = provision_environment(project, name)
        assert done.returncode == 0, f"{name}: {done.stderr}"
        (found,) = project.world["topics"]
        assert found["identity"]["type"] == "SystemAssigned, UserAssigned"
        assert sorted(found["identity"]["userAssignedIdentities"]) == sorted(team)
    assert len(project.world["topic_puts"]) == 3


def test_three_environments_on_a_workspace_without_a_topic_create_it_once_and_share_it(project: Project) -> None:
    for name in ("prod", "staging", "dev"):
        done = provision_environment(project, name)
        assert done.returncode == 0, f"{name}: {done.stderr}"
    (topic,) = project.world["topics"]
    assert topic["name"] == "evgt-ws1" and topic["identity"]["type"] == "SystemAssigned"


def test_a_deleted_environments_identity_is_dropped_so_the_next_provision_succeeds(project: Project) -> None:
    deleted = uai("id-evgt-retrain-gone", group="rg-gone")  # an environment's resource group, deleted
    topic = portal_topic()
    topic["identity"]["userAssignedIdentities"] = {OTHER_UAI: {}, deleted: {"principalId": "p"}}
    project.world["topics"] = [topic]  # identities: OTHER_UAI only
    done = provision_environment(project, "prod")
    assert done.returncode == 0, done.stderr
    assert project.world["topics"][0]["identity"]["userAssignedIdentities"] == {OTHER_UAI: {}}
    assert ["identity", "show", "--ids", deleted, "--query", "id", "-o", "tsv"] in project.calls("az")
    # Without the check, the PUT names the deleted identity and ARM refuses it: every later provision fails.
    project.world["topics"][0]["identity"]["userAssignedIdentities"][deleted] = {}
    project.world["env"] = {
        "RETRAIN_SYSTEM_TOPIC_STATE": hooklib.topic(WORKSPACE_ID, project.world["topics"], lambda _: True)[2]
    }
    project.world_file.write_text(json.dumps(project.world), encoding="utf-8")
    refused = subprocess.run(
        [str(project.root / "bin" / "azd"), "provision"], env=project.env, capture_output=True, text=True, check=False
    )
    assert refused.returncode != 0 and "does not exist" in refused.stderr


def test_preprovision_says_which_identity_it_drops_and_keeps_one_it_cannot_read(project: Project) -> None:
    deleted, foreign = uai("id-gone"), uai("id-foreign", group="rg-elsewhere")
    topic = portal_topic()
    topic["identity"]["userAssignedIdentities"] = {deleted: {}, foreign: {}}
    project.world.update(topics=[topic], unreadable_identities=[foreign])
    done = project.run("preprovision")
    assert done.returncode == 0, done.stderr
    assert f"dropping the user-assigned identity {deleted} from the topic: it no longer exists" in done.stderr
    assert f"cannot read the user-assigned identity {foreign}; keeping it" in done.stderr
    state = json.loads(base64.b64decode(project.azd_env["RETRAIN_SYSTEM_TOPIC_STATE"]))
    assert state["userAssignedIdentities"] == {foreign: {}}  # an unknown is never dropped


def test_a_topic_listing_more_user_assigned_identities_than_event_grid_allows_is_refused(project: Project) -> None:
    many = [uai("id-1"), uai("id-2"), uai("id-3")]
    topic = portal_topic()
    topic["identity"]["userAssignedIdentities"] = {i: {} for i in many}
    project.world.update(topics=[topic], identities=many)
    done = project.run("preprovision")
    assert done.returncode != 0
    assert "lists 3 user-assigned identities and Event Grid allows at most 2" in done.stderr
    assert "remove the ones nobody uses (portal: the topic > Identity > User assigned)" in done.stderr
    assert "RETRAIN_SYSTEM_TOPIC_STATE" not in project.azd_env


# ------------------------------------------------------------------ preprovision: what the workspace needs


def test_a_workspace_without_public_network_access_is_refused_with_what_to_do(project: Project) -> None:
    project.world["workspace"]["properties"]["publicNetworkAccess"] = "Disabled"
    done = project.run("preprovision")
    assert done.returncode != 0
    assert "the workspace ws1 has public network access disabled" in done.stderr
    assert "--public-network-access Enabled" in done.stderr
    assert "azd env set RETRAIN_ALLOW_PRIVATE_WORKSPACE true" in done.stderr
    assert project.calls("az", "eventgrid") == []
    allowed = project.run("preprovision", RETRAIN_ALLOW_PRIVATE_WORKSPACE="true")
    assert allowed.returncode == 0, allowed.stderr
    assert "public network access disabled; RETRAIN_ALLOW_PRIVATE_WORKSPACE=true" in allowed.stdout


def test_event_grid_is_registered_in_the_workspace_subscription_before_topics_are_listed(project: Project) -> None:
    project.world["providers"] = {"Microsoft.EventGrid": "NotRegistered"}
    done = project.run("preprovision")
    assert done.returncode == 0, done.stderr
    assert "registering the resource provider Microsoft.EventGrid in subscription" in done.stdout
    calls = [c for c in project.world["calls"] if c[0] == "az"]
    register = calls.index(
        ["az", "provider", "register", "--namespace", "Microsoft.EventGrid", "--subscription", SUB, "--wait"]
    )
    listing = next(i for i, c in enumerate(calls) if c[1:4] == ["eventgrid", "system-topic", "list"])
    assert register < listing
    assert project.world["providers"]["Microsoft.EventGrid"] == "Registered"


def test_an_unregistered_event_grid_that_cannot_be_registered_stops_with_the_command(project: Project) -> None:
    project.world.update(providers={"Microsoft.EventGrid": "NotRegistered"}, register_fails=True)
    done = project.run("preprovision")
    assert done.returncode != 0
    assert f"az provider register --namespace Microsoft.EventGrid --subscription {SUB} --wait" in done.stderr
    assert project.calls("az", "eventgrid") == []


ML_SUB = "00000000-0000-0000-0000-0000000000ml"
APP_SUB = "00000000-0000-0000-0000-00000000app0"


def _untargeted(project: Project) -> list[list[str]]:
    """az calls that rely on the account's default subscription (no --subscription, no --ids)."""
    return [
        c
        for c in project.calls("az")
        if c[:2] != ["account", "show"] and "--subscription" not in c and "--ids" not in c
    ]


def test_preprovision_targets_the_workspace_subscription_whatever_az_defaults_to(project: Project) -> None:
    project.world.update(subscription=ML_SUB, account_subscription="someone-elses-default")
    project.world["workspace"]["id"] = WORKSPACE_ID.replace(SUB, ML_SUB)
    project.world["topics"] = [portal_topic(source=WORKSPACE_ID.replace(SUB, ML_SUB))]
    done = project.run("preprovision", AZUREML_SUBSCRIPTION_ID=ML_SUB, AZURE_SUBSCRIPTION_ID=APP_SUB)
    assert done.returncode == 0, done.stderr
    assert project.azd_env["RETRAIN_SYSTEM_TOPIC_NAME"] == "ws1-events"
    assert _untargeted(project) == []


def test_postdeploy_targets_the_app_and_workspace_subscriptions_whatever_az_defaults_to(project: Project) -> None:
    deployed(project, subscription=ML_SUB, app_subscription=APP_SUB, account_subscription="someone-elses-default")
    done = project.run("postdeploy", AZUREML_SUBSCRIPTION_ID=ML_SUB, AZURE_SUBSCRIPTION_ID=APP_SUB)
    assert done.returncode == 0, done.stderr
    assert project.world["event_subscriptions"]["evgt-ws1"] == NAMES
    assert _untargeted(project) == []
    (show, *_) = project.calls("az", "functionapp", "function", "show")
    assert show[show.index("--subscription") + 1] == APP_SUB


# ------------------------------------------------------------------ the PowerShell twins

NATIVE = re.compile(r"(?:^|[\s({;|=])(?:az|azd|python3?)\s|&\s*[\"$]")


def unchecked_native_calls(script: str) -> list[str]:
    """Lines of a .ps1 that run a native command (az, azd, python, & $exe) without a $LASTEXITCODE
    check on the same or the next line: PowerShell does not stop on a native command's failure."""
    logical = re.sub(r"`\r?\n\s*", " ", script).splitlines()  # a trailing backtick continues the line
    lines = []
    for line in logical:
        # String contents are not commands ('... run azd up ...'); a comment is not code.
        code = re.sub(r'"[^"]*"', '""', re.sub(r"'[^']*'", "''", line))
        lines.append(code.split("#", 1)[0].rstrip())
    unchecked = []
    for i, line in enumerate(lines):
        if not NATIVE.search(line) or line.lstrip().startswith(("function ", "Write-Error")):
            continue
        following = next((later for later in lines[i + 1 :] if later.strip()), "")
        if "$LASTEXITCODE" not in line and "$LASTEXITCODE" not in following:
            unchecked.append(logical[i].strip())
    return unchecked


def test_the_static_check_finds_a_native_call_whose_failure_would_be_ignored() -> None:
    script = "azd env set A b\n$x = az resource show --ids $id\nif ($LASTEXITCODE -ne 0) { Fail 'x' }\n"
    assert unchecked_native_calls(script) == ["azd env set A b"]
    continued = "$x = az resource show `\n    --ids $id\nif ($LASTEXITCODE -ne 0) { Fail 'x' }\n"
    assert unchecked_native_calls(continued) == []
    assert unchecked_native_calls("$found = @($t | & $python hooklib.py topic $id)\n") != []


@pytest.mark.parametrize("script", sorted(p.name for p in HOOKS.glob("*.ps1")))
def test_every_native_command_in_the_powershell_hooks_is_checked(script: str) -> None:
    assert unchecked_native_calls((HOOKS / script).read_text(encoding="utf-8")) == []


# ------------------------------------------------------------------ preprovision: the job-name key


def test_preprovision_generates_the_job_name_key_once_and_never_prints_it(project: Project) -> None:
    done = project.run("preprovision")
    assert done.returncode == 0, done.stderr
    key = project.azd_env["RETRAIN_JOB_NAME_KEY"]
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert key not in done.stdout and key not in done.stderr
    assert "generated RETRAIN_JOB_NAME_KEY" in done.stdout

    project.world["env"] = {}
    again = project.run("preprovision", RETRAIN_JOB_NAME_KEY=key)  # azd passes the environment's values
    assert again.returncode == 0, again.stderr
    assert "RETRAIN_JOB_NAME_KEY" not in project.azd_env  # kept: a new key would not find jobs in progress
