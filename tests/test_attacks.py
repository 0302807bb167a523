"""Attacks on the features that landed last (approvals, the stop switch, the new triggers, the console's
inputs), each tried the way an attacker would: through the local host's HTTP routes or as the event a
workspace account or an events key can send, with the real Azure ML SDK against the fake ARM. Each test
pins what stops it (docs/security.md, "What was attacked")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.approving import Approving, opened
from tests.builders import ADA, ADA_TOKEN, BOB, MODEL, NEW_DATA, blob_event, run_event, signed, signed_in
from tests.conftest import Client
from tests.ledgers import LedgerSpec
from tests.world import World


def test_who_asked_for_the_retrain_cannot_approve_the_deploy_of_its_run_under_four_eyes(approving: Approving) -> None:
    """Ada retrains by hand (inputs within `overridable`), her run becomes a candidate, and she approves its
    deploy: the deploy's own trigger is the run's event (nobody), so without looking back she would be the
    one person who put her model in production."""
    status, retrain = approving.post(f"/api/models/{MODEL}/retrain", {"reason": "mine"}, signed(ADA, "ada@contoso"))
    assert status == 202 and retrain["outcome"] == "submitted", retrain
    job = retrain["job"]["name"]
    arm = approving.azure.arm
    arm.set_job_status(job, "Completed")
    arm.add_step(job, "evaluate_model", metrics={"r2_score": 0.61})
    tags = arm.jobs[job]["properties"]["tags"]
    [deploy] = approving.azure.deliver(
        run_event(run_id=job, tags=tags, topic=approving.azure.settings.workspace_id)
    ).decisions
    assert (deploy.action, deploy.outcome) == ("deploy", "pending"), deploy.reason

    status, own = approving.post(f"/api/decisions/{deploy.id}/approve", {"reason": "lgtm"}, signed(ADA, "ada@x"))

    assert status == 403 and "asked for" in own["error"] and approving.deployments_put() == 0, own
    assert f"retrain decision {retrain['id']}" in own["error"]
    status, done = approving.post(f"/api/decisions/{deploy.id}/approve", {"reason": "checked"}, signed(BOB, "bob@c"))
    assert status == 202 and approving.deployments_put() == 1, done


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"/api/models/{MODEL}/retrain", {"dry_run": True}),
        (f"/api/models/{MODEL}/rollback", {}),
        ("/api/freeze", {}),
        ("/api/decisions/de-0123456789abcdef/approve", {}),
    ],
)
@pytest.mark.parametrize(
    "reason",
    [
        "ok\n2026-12-06 10:00:00 INFO approval decision=de-1 approved by ada@contoso",  # a forged log line
        "approved \u202egnorw koo\u202c",  # reads backwards in whatever shows it
        "ok\u2028forged line",  # a line separator: a new line to some log viewers
    ],
)
def test_a_reason_that_could_forge_a_log_line_or_reorder_a_record_is_a_400_and_nothing_happens(
    client: Client, path: str, body: dict[str, object], reason: str
) -> None:
    status, _, out = client.call("POST", path, {**body, "reason": reason})

    assert status == 400 and "field 'reason'" in out["error"] and "U+" in out["error"], out
    _, _, listed = client.call("GET", "/api/decisions")
    assert listed["decisions"] == []


@pytest.mark.parametrize(
    "blob", ["diabetes/../private/x.csv", "diabetes/./x.csv", "diabetes/..", "diabetes/..\\..\\private\\x.csv"]
)
def test_a_blob_name_that_climbs_out_of_the_named_prefix_opens_no_burst(tmp_path: Path, blob: str) -> None:
    """`training/diabetes/` is what the policy names: a name under it as a string, but elsewhere once a path
    is resolved, is a recorded skip that says so."""
    world = World(LedgerSpec("sqlite", str(tmp_path / "ledger.db")), policy=NEW_DATA)
    [skipped] = world.deliver(blob_event(blob)).decisions

    assert skipped.outcome == "skipped" and "'..' segment or a backslash" in skipped.reason, skipped.reason
    world.clock.advance(hours=1)
    assert (
        world.ledger.get_model(MODEL).burst is None
        and world.reconcile().started == []
        and world.actions.submissions == []
    )


def test_a_function_key_cannot_lift_the_stop_switch_a_person_set(
    client: Client, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone freezes from the command line in an incident; a leaked key tries to lift it (to deploy
    through it). A freeze set with a key is still lifted with a key: nobody told them apart."""
    from function_app import cli, runtime

    monkeypatch.setenv("USER", "ada")
    monkeypatch.setenv("LOGNAME", "ada")
    assert cli.main(["freeze", "--reason", "incident 4711", "--model", MODEL]) == 0
    capsys.readouterr()
    ledger = runtime.get_retrainer().ledger

    status, _, out = client.call("POST", "/api/unfreeze", {"reason": "all clear", "models": [MODEL]})

    assert status == 403 and "frozen by ada (incident 4711)" in out["error"] and "retrain unfreeze" in out["error"]
    assert ledger.get_model(MODEL).frozen is not None
    _, _, listed = client.call("GET", "/api/decisions")
    assert [d["action"] for d in listed["decisions"]] == ["freeze"]  # the refusal changed and recorded nothing
    # nor can it set the switch anew on fewer actions (which would lift the rest) to unfreeze it after
    status, _, out = client.call(
        "POST", "/api/freeze", {"reason": "narrower", "models": [MODEL], "actions": ["promote"]}
    )
    assert status == 200 and out["decisions"][0]["outcome"] == "skipped", out
    assert "nothing changed, frozen by ada" in out["decisions"][0]["reason"]
    assert (ledger.get_model(MODEL).frozen or {}).get("actions") == ["retrain", "deploy", "promote"]
    status, _, out = client.call("POST", "/api/freeze", {"reason": "mine", "models": ["churn-classifier"]})
    assert status == 200 and out["decisions"][0]["outcome"] == "submitted"
    status, _, out = client.call("POST", "/api/unfreeze", {"reason": "mine", "models": ["churn-classifier"]})
    assert status == 200 and out["decisions"][0]["outcome"] == "submitted", out
    assert cli.main(["unfreeze", "--reason", "all clear", "--model", MODEL]) == 0
    assert ledger.get_model(MODEL).frozen is None


def test_another_caller_resending_a_key_and_body_learns_nothing_of_the_first_caller_s_request(
    approving: Approving,
) -> None:
    """Bob saw Ada's Idempotency-Key (a shared script's log, a proxy): resending it with her body must
    not hand him her record (its id, plan, job) nor count as hers; Ada's own retry still gets hers."""
    path, body = f"/api/models/{MODEL}/retrain", {"reason": "nightly", "dry_run": True}
    ada = {**signed(ADA, "ada@contoso"), "Idempotency-Key": "K-ada"}
    status, first = approving.post(path, body, ada)
    assert status == 200 and first["outcome"] == "planned", first

    status, bob = approving.post(path, body, {**signed(BOB, "bob@c"), "Idempotency-Key": "K-ada"})

    assert status == 422 and "another caller" in bob["error"] and "a key of your own" in bob["error"], bob
    assert first["id"] not in json.dumps(bob) and "nightly" not in json.dumps(bob) and "job" not in bob
    status, again = approving.post(path, body, ada)
    assert (status, again["id"]) == (200, first["id"])
    _, _, listed = approving.client.call("GET", "/api/decisions")
    assert [d["id"] for d in listed["decisions"]] == [first["id"]]  # Bob's refusal recorded and did nothing


@pytest.mark.parametrize(
    "argv",
    [
        ["freeze", "--model", MODEL],
        ["unfreeze"],
        ["rollback", MODEL],
        ["approve", "de-0123456789abcdef"],
        ["reject", "de-0123456789abcdef"],
    ],
)
@pytest.mark.parametrize("reason", ["ok\nINFO approval approved by bob", "ok\u2028forged", "ok \u202eeno\u202c"])
def test_a_reason_typed_at_the_command_line_is_checked_as_one_line_as_the_routes_check_it(
    client: Client, capsys: pytest.CaptureFixture[str], argv: list[str], reason: str
) -> None:
    """The command line's reason is recorded, logged and shown beside the routes' (an approval's reason is
    what the next person reads), so it is refused as the routes refuse it, before anything is looked up."""
    from function_app import cli

    assert cli.main([*argv, "--reason", reason]) == 2
    err = capsys.readouterr().err
    assert "--reason" in err and "U+" in err and "one line of plain text" in err, err
    _, _, listed = client.call("GET", "/api/decisions")
    assert listed["decisions"] == []


def test_who_created_a_candidate_run_cannot_approve_its_deploy_under_four_eyes(approving: Approving) -> None:
    """Ada, a data scientist who also approves, submits a run in an experiment the policy's `candidates` admit;
    its deploy waits for approval and she approves it. The deploy's trigger is the run's event (it names nobody):
    only who created the run, as Azure ML records it (run history's object id and principal name, not the job's
    display name), tells that it is hers."""
    run, world = "ada-sweep-20261201", approving.azure
    world.arm.add_job(run, experiment="diabetes-retrain", created_by=ADA_TOKEN)
    world.arm.add_step(run, "evaluate_model", metrics={"r2_score": 0.61})
    assert world.arm.jobs[run]["systemData"]["createdBy"] == "Ada Lovelace"  # what the job itself says of her
    [deploy] = world.deliver(run_event(run_id=run, topic=world.settings.workspace_id)).decisions
    assert (deploy.action, deploy.outcome) == ("deploy", "pending"), deploy.reason

    status, own = approving.post(f"/api/decisions/{deploy.id}/approve", {"reason": "lgtm"}, signed(ADA, "al@x.example"))

    assert status == 403 and f"created run {run}" in own["error"] and "object id" in own["error"], own
    assert approving.deployments_put() == 0
    status, done = approving.post(f"/api/decisions/{deploy.id}/approve", {"reason": "checked"}, signed(BOB, "bob@c"))
    assert status == 202 and approving.deployments_put() == 1, done
    [checked] = done["details"]["approval"]["creators"]
    assert checked == {
        "run": run,
        "created_by": "Ada Lovelace",
        "compared": "object id, principal name",
        "as": "the candidate run of this decision",
    }


def test_a_creator_the_service_cannot_match_is_said_in_the_approval_s_record(
    approving: Approving, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line names its user by login name, which no form of Azure ML's record of a creator is: the
    approval goes through (the command line counts as an identity for four eyes) and its record says the run's
    creator could not be matched, and why."""
    from function_app import cli

    run, world = "ada-sweep-20261202", approving.azure
    world.arm.add_job(run, experiment="diabetes-retrain", created_by=ADA_TOKEN)
    world.arm.add_step(run, "evaluate_model", metrics={"r2_score": 0.61})
    [deploy] = world.deliver(run_event(run_id=run, topic=world.settings.workspace_id)).decisions
    monkeypatch.setenv("USER", "ada")
    monkeypatch.setenv("LOGNAME", "ada")

    assert cli.main(["approve", deploy.id, "--reason", "checked"]) == 0

    assert "approved by ada" in capsys.readouterr().out
    approval = world.ledger.get_decision(deploy.id).details["approval"]  # type: ignore[union-attr]
    assert approval["approved_by"] == "ada" and approving.deployments_put() == 1
    [creator] = approval["creators"]
    assert creator["run"] == run and "command line" in creator["not_compared"], approval


def test_who_created_a_candidate_run_cannot_promote_its_rollout_held_for_approval_under_four_eyes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy.approval.promote without approval of the deploy: Ada's run becomes a candidate, rolls out on its own
    and holds before its promotion for a person. Its deploy was asked by the run's event (nobody), so without
    looking at who created the run she would be the one person who put her model in production."""
    from tests.rollouts import Operated

    monkeypatch.chdir(tmp_path)
    signed_in(monkeypatch)
    run = "ada-sweep-20261206"
    for approving in opened(
        tmp_path, LedgerSpec("sqlite", str(tmp_path / "l.db")), {"required": False, "promote": True}
    ):
        world = approving.azure
        world.arm.add_job(run, experiment="diabetes-retrain", created_by=ADA_TOKEN)
        world.arm.add_step(run, "evaluate_model", metrics={"r2_score": 0.61})
        [deploy] = world.deliver(run_event(run_id=run, topic=world.settings.workspace_id)).decisions
        assert (deploy.action, deploy.outcome) == ("deploy", "submitted"), deploy.reason
        operated = Operated.of(world, approving.client, deploy)  # its helpers, on Ada's candidate
        operated.hold()
        held = dict(operated.traffic())
        path = f"/api/models/{MODEL}/promote"

        status, own = approving.post(path, {"reason": "mine"}, signed(ADA, "al@x.example"))

        assert status == 403 and f"created run {run}" in own["error"] and "object id" in own["error"], own
        assert "promote" in own["error"] and operated.traffic() == held
        world.arm.fail(404, times=5, method="GET", path=f"/history/v1.0/.*/runs/{run}$")  # run history lost the run
        status, promoted = approving.post(path, {"reason": "canary held"}, signed(BOB, "bob@c"))
        assert status == 202 and promoted["action"] == "promote" and operated.traffic() == {operated.name: 100}, (
            promoted
        )
        # the promotion's record says what four eyes compared, and what could not be read (as an approval's does)
        [unread] = promoted["details"]["approval"]["creators"]
        assert unread["run"] == run and "could not be read" in unread["not_compared"], unread
