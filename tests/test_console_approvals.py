"""Approving and rejecting from the operator console, in a real headless Chromium (Debian's package,
driven by Playwright): a deploy or a retrain waiting for approval says so on its model's card, and
Approve or Reject, pressed by a person, carries it out or skips it, recorded with who pressed it."""

from __future__ import annotations

from pathlib import Path

import pytest

from handlers.policy_file import parse_policy
from tests.browser import browser_page
from tests.builders import BOB, drift_event, signed, signed_in
from tests.conftest import REPO
from tests.fakes import RecordingActions, SteadyHealth
from tests.hosts import hosting
from tests.ledgers import LedgerSpec
from tests.world import World

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ENDPOINT = "diabetes-endpoint"


def test_a_deploy_waiting_for_approval_is_approved_from_the_console(tmp_path: Path) -> None:
    """Under deploy.approval the card says WAITING FOR APPROVAL with the decision; Approve asks why and
    carries the deploy out, recorded with who pressed it (the local host has no sign-in: a function key
    approves only with four eyes off)."""
    from playwright.sync_api import expect

    text = (REPO / "examples" / "policy.yaml").read_text()
    text = text.replace(
        "      endpoint: diabetes-endpoint\n",
        "      endpoint: diabetes-endpoint\n      approval: {four_eyes: false}\n",
        1,
    )
    world = World(
        LedgerSpec("sqlite", str(tmp_path / "l.db")),
        policy=parse_policy(text),
        actions=RecordingActions(traffic={ENDPOINT: {"blue": 100}}),
        health={"metrics": SteadyHealth()},
    )
    pending = world.manual("deploy", version="4", reason="new model")
    assert pending.outcome == "pending"
    with hosting(world) as url, browser_page() as page:
        page.goto(f"{url}/api/console")
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        card.wait_for()
        assert f"WAITING FOR APPROVAL: decision {pending.id}" in card.locator(".rollout-step").inner_text()
        assert not card.locator('button[data-action="promote"]').is_enabled()
        assert not page.locator(
            'article.model[data-model="churn-classifier"] button[data-action="approve"]'
        ).is_enabled()

        card.locator('button[data-action="approve"]').click()
        page.wait_for_selector("#result .decision")
        assert "Approve sklearn_regression_model: deploy submitted" in page.locator("#result .decision").inner_text()
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        expect(card.locator('button[data-action="approve"]')).to_be_disabled()
    done = world.worker.ledger.get_decision(pending.id)
    assert done is not None and done.outcome == "submitted"
    assert done.details["approval"]["approve_reason"] == "approved from the console"


def waiting_retrain(tmp_path: Path) -> tuple[World, str]:
    """A world under retrain.approval (four eyes on, the default) whose drift event's retrain waits for a
    person; the waiting decision's id."""
    text = (REPO / "examples" / "policy.yaml").read_text()
    text = text.replace("      daily_budget: 3\n", "      daily_budget: 3\n      approval: {expires: 24h}\n", 1)
    world = World(LedgerSpec("sqlite", str(tmp_path / "l.db")), policy=parse_policy(text))
    [pending] = world.deliver(drift_event()).decisions
    assert (pending.action, pending.outcome) == ("retrain", "pending") and world.actions.submissions == []
    return world, pending.id


def test_a_retrain_waiting_for_approval_is_approved_from_the_console_by_a_signed_in_person(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card says WAITING FOR APPROVAL for the retrain; Approve, pressed by Bob (signed in through App
    Service), submits its job once, and the record names him."""
    from playwright.sync_api import expect

    signed_in(monkeypatch)
    world, pending = waiting_retrain(tmp_path)
    with hosting(world) as url, browser_page(headers=signed(BOB, "bob@c")) as page:
        page.goto(f"{url}/api/console")
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        card.wait_for()
        assert f"WAITING FOR APPROVAL: retrain {pending}" in card.locator(".job-link").inner_text()
        assert card.locator('button[data-action="reject"]').is_enabled()

        card.locator('button[data-action="approve"]').click()
        page.wait_for_selector("#result .decision")
        said = page.locator("#result .decision").inner_text()
        assert "Approve sklearn_regression_model: retrain submitted" in said and "approved by bob@c" in said
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        expect(card.locator('button[data-action="approve"]')).to_be_disabled()
        job = world.actions.submissions[0]
        expect(card.locator(".job-link")).to_have_text(job)
    assert world.actions.submissions == [job]  # once
    done = world.worker.ledger.get_decision(pending)
    assert done is not None and (done.outcome, (done.job or {}).get("name")) == ("submitted", job)
    approval = done.details["approval"]
    assert (approval["approved_by"], approval["approver"]["id"]) == ("bob@c", BOB)
    assert approval["approve_reason"] == "approved from the console"


def test_a_retrain_waiting_for_approval_is_rejected_from_the_console_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reject asks why; the answer is recorded with who pressed it, nothing is submitted, the slot is free."""
    from playwright.sync_api import expect

    signed_in(monkeypatch)
    world, pending = waiting_retrain(tmp_path)
    why = "a known upstream outage, not drift"
    with hosting(world) as url, browser_page(answer=why, headers=signed(BOB, "bob@c")) as page:
        page.goto(f"{url}/api/console")
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        card.wait_for()
        card.locator('button[data-action="reject"]').click()
        page.wait_for_selector("#result .decision")
        said = page.locator("#result .decision").inner_text()
        assert "Reject sklearn_regression_model: retrain skipped" in said and why in said
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        expect(card.locator('button[data-action="reject"]')).to_be_disabled()
        assert "WAITING FOR APPROVAL" not in card.inner_text()
    assert world.actions.submissions == [] and "retrain" not in world.flights()
    done = world.worker.ledger.get_decision(pending)
    assert done is not None and done.outcome == "skipped" and "rejected by bob@c at" in done.reason
    assert (done.details["approval"]["rejected_by"], done.details["approval"]["why"]) == ("bob@c", why)
