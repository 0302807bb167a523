"""The azd hooks and the workspace's Event Grid system topic: preprovision finds and reuses an existing
topic (its identities and tags kept), or lets the deployment create one and remembers it did; several
environments share one topic within Event Grid's limits (:mod:`tests.hooks_world`)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from tests.hooks_world import OTHER_UAI, SUB, WORKSPACE_ID, Project, hooklib, portal_topic


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


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
