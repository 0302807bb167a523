"""Who may decide on a decision waiting for approval (:func:`handlers.approval_rules.refusal`), and the
notification each way a wait ends gives (:func:`handlers.notify.notification_of`): pure rules."""

from __future__ import annotations

import pytest

from handlers.approval_rules import refusal
from handlers.creators import RunCreator, creator_check, sources
from handlers.notify import notification_of
from handlers.records import DecisionRecord

KEY = "models.churn.deploy.approval"
ADA = {"kind": "principal", "id": "a", "name": "ada", "roles": "Retrain.Operator"}
BOB = {"kind": "principal", "id": "b", "name": "bob", "roles": "Retrain.Operator Retrain.Approver"}
KEYED = {"kind": "function key"}


@pytest.mark.parametrize(
    ("four_eyes", "role", "asked", "deciding", "verb", "says"),
    [
        (True, None, ADA, BOB, "approve", None),
        (True, None, ADA, ADA, "approve", "ada asked for this and may not approve it too"),
        (True, None, {}, KEYED, "approve", "a signed-in identity is needed to approve it"),
        # a leaked key could reject every candidate (a denial of promotion), anonymously: under four eyes a
        # rejection needs an identity too; withdrawing one's own request needs no second person
        (True, None, KEYED, KEYED, "reject", "a signed-in identity is needed to reject it"),
        (True, None, {}, KEYED, "reject", "a signed-in identity is needed to reject it"),
        (True, None, ADA, ADA, "reject", None),
        (False, None, ADA, KEYED, "reject", None),
        # one person in another spelling: the object id's case, the name instead of the id, a login's case
        (True, None, {**ADA, "id": "A"}, ADA, "approve", "ada asked for this and may not approve it too"),
        (True, None, ADA, {**ADA, "id": ""}, "approve", "a signed-in identity is needed to approve it"),
        (
            True,
            None,
            {"kind": "command line", "user": "Ada"},
            {"kind": "command line", "user": "ada"},
            "approve",
            "asked",
        ),
        (False, None, KEYED, KEYED, "approve", None),
        (False, "Retrain.Approver", ADA, KEYED, "approve", "is not signed in"),
        (True, "Retrain.Approver", BOB, ADA, "reject", "ada lacks the app role 'Retrain.Approver'"),
        (True, "Retrain.Approver", ADA, BOB, "promote", None),
        (True, None, {"kind": "command line", "user": "ada"}, {"kind": "command line", "user": "bob"}, "approve", None),
    ],
)
def test_who_may_decide_is_the_approver_role_then_four_eyes(
    four_eyes: bool, role: str | None, asked: dict[str, str], deciding: dict[str, str], verb: str, says: str | None
) -> None:
    why = refusal(KEY, four_eyes, role, asked, deciding, verb)
    assert (why is None) if says is None else (why is not None and says in why and KEY in why)


@pytest.mark.parametrize(
    ("approval", "kind"),
    [
        ({"rejected_by": "bob", "why": "no"}, "rejected"),
        ({"expired_at": "2026-12-06T10:00:00Z", "released_by": "reconciler"}, "expired"),
        ({"superseded_by": "re-2"}, "superseded"),
    ],
)
def test_a_wait_that_ended_without_approval_is_published_by_how_it_ended(approval: dict[str, str], kind: str) -> None:
    record = DecisionRecord(
        "re-1", "churn", "retrain", "skipped", "why", {}, "2026-12-06T10:00:00Z", None, {"approval": approval}
    )
    note = notification_of(record)
    assert (
        note is not None
        and note.type == f"retrain.decision.retrain.{kind}"
        and note.data["details"]["approval"] == approval
    )
    plain = DecisionRecord("re-1", "churn", "retrain", "skipped", "cooldown", {}, "2026-12-06T10:00:00Z", None, {})
    assert notification_of(plain) is None


ADA_RUN = RunCreator("r-1", object_id="6F1E-ADA", upn="Ada@Contoso.example", name="Ada Lovelace")


@pytest.mark.parametrize(
    ("creator", "approver", "created", "recorded"),
    [
        (ADA_RUN, {**ADA, "id": "6f1e-ada", "name": "someone@else"}, True, {"matched": "object id 6f1e-ada"}),
        (
            ADA_RUN,
            {**ADA, "id": "other", "name": "ADA@contoso.EXAMPLE"},
            True,
            {"matched": "principal name ada@contoso.example"},
        ),
        (ADA_RUN, {**BOB, "name": "bob@contoso.example"}, False, {"compared": "object id, principal name"}),
        (ADA_RUN, BOB, False, {"compared": "object id"}),  # "bob" is no principal name
        # a display name is no identity: Azure ML's job names a person so, and nothing matches on it
        (
            RunCreator("r-1", name="Ada Lovelace"),
            {**ADA, "name": "Ada Lovelace"},
            False,
            {"not_compared": "recorded no"},
        ),
        (ADA_RUN, {"kind": "command line", "user": "ada"}, False, {"not_compared": "command line"}),
        (RunCreator("r-1", problem="403 Forbidden"), BOB, False, {"not_compared": "could not be read: 403"}),
    ],
)
def test_an_approver_is_matched_with_a_run_s_creator_by_object_id_or_principal_name_only(
    creator: RunCreator, approver: dict[str, str], created: bool, recorded: dict[str, str]
) -> None:
    mine, said = creator_check(creator, approver)
    assert mine is created and said["run"] == "r-1"
    [(key, text)] = recorded.items()
    assert text in said[key] if key == "not_compared" else said[key] == text, said


AT = "2026-12-06T10:00:00Z"
FROM_DATA = {"source": "model:churn", "event_id": "data-asset:churn-data:7", "event_type": "retrain.on.data.assets"}


def deploy_of(run: str, tag: str) -> DecisionRecord:
    candidate = {"run_id": run, "run_tags": {"Retrain_Decision": tag}}
    return DecisionRecord(
        "de-1", "churn", "deploy", "pending", "gate", {}, AT, None, {"rendered": {"candidate": candidate}}
    )


@pytest.mark.parametrize(
    ("retrain", "found"),
    [
        # the service retrained on a new data version: the deploy comes from its run and from that version
        (
            DecisionRecord("re-7", "churn", "retrain", "submitted", "new data", FROM_DATA, AT, {"name": "job-7"}),
            [("run", "job-7"), ("data", "churn-data:7")],
        ),
        # ... on an upstream run: from its run and the upstream run
        (
            DecisionRecord(
                "re-7", "churn", "retrain", "submitted", "up", {}, AT, {"name": "job-7"}, {"upstream_run": "u-1"}
            ),
            [("run", "job-7"), ("run", "u-1")],
        ),
        # a tag naming a retrain whose job is another run, or of another model, adds nothing (provenance)
        (
            DecisionRecord("re-7", "churn", "retrain", "submitted", "new data", FROM_DATA, AT, {"name": "x"}),
            [("run", "job-7")],
        ),
        (
            DecisionRecord("re-7", "other", "retrain", "submitted", "new data", FROM_DATA, AT, {"name": "job-7"}),
            [("run", "job-7")],
        ),
    ],
)
def test_a_deploy_comes_from_its_candidate_run_and_from_what_started_the_retrain_that_made_it(
    retrain: DecisionRecord, found: list[tuple[str, str]]
) -> None:
    got = sources(deploy_of("job-7", "re-7"), {"re-7": retrain}.get)
    assert [(s.kind, s.name) for s in got] == found


def test_a_retrain_comes_from_the_new_data_version_or_upstream_run_that_started_it_and_a_manual_one_from_none() -> None:
    by_data = DecisionRecord("re-7", "churn", "retrain", "pending", "new data", FROM_DATA, AT)
    by_run = DecisionRecord("re-8", "churn", "retrain", "pending", "up", {}, AT, None, {"upstream_run": "u-1"})
    manual = DecisionRecord("re-9", "churn", "retrain", "pending", "asked", {"event_type": "ManualRequest.retrain"}, AT)
    assert [(s.kind, s.name, s.what) for s in sources(by_data, {}.get)] == [
        ("data", "churn-data:7", "the new data asset version that started this decision")
    ]
    assert [(s.kind, s.name) for s in sources(by_run, {}.get)] == [("run", "u-1")]
    assert sources(manual, {}.get) == []
