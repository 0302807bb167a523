"""The operator console in a real headless Chromium (Debian's package, driven by Playwright).

First against the local host as `make run` starts it (a process, the example policy, the dry-run
backend): events sent with the real EventGridPublisherClient appear, a decision is found by event id
and expanded, a dry-run retrain is pressed and its decision shown. Then a rollout in flight, judged
on health numbers, drawn with its traffic split, bake and chart. Screenshots go to the folder
RETRAIN_SCREENSHOTS names (docs/ for the README's and docs/operations.md's), else to the test's own folder.
Approving and rejecting from the console: tests/test_console_approvals.py; a prod environment's
cards: tests/test_console_environments.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers.policy_file import parse_policy
from tests.browser import browser_page
from tests.conftest import REPO
from tests.fakes import RecordingActions, SteadyHealth
from tests.hosts import hosting, serving
from tests.ledgers import LedgerSpec
from tests.world import World

pytestmark = [pytest.mark.slow, pytest.mark.browser]

EXAMPLES = REPO / "examples" / "events"
ENDPOINT = "diabetes-endpoint"


def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("RETRAIN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_console_shows_events_finds_a_decision_by_event_id_and_runs_a_dry_run_retrain(tmp_path: Path) -> None:
    drift = json.loads((EXAMPLES / "drift.eventgrid.json").read_text())
    finished = json.loads((EXAMPLES / "retrain-run-completed.eventgrid.json").read_text())
    from playwright.sync_api import expect

    with serving({"RETRAIN_SQLITE_PATH": str(tmp_path / "ledger.db")}) as host, browser_page() as page:
        page.goto(f"{host.url}/api/console?code=local")
        page.wait_for_selector('article.model[data-model="sklearn_regression_model"]')
        assert page.locator("#backend").inner_text(timeout=5000).startswith("backend dryrun")

        host.publisher().send(drift)
        host.publisher().send(finished)
        page.click("#refresh")
        page.wait_for_selector("#decisions tr.row >> nth=1")
        rows = page.locator("#decisions tr.row")
        actions = {
            (rows.nth(i).locator("td").nth(2).inner_text(), rows.nth(i).locator("td").nth(3).inner_text())
            for i in range(rows.count())
        }
        assert ("retrain", "planned") in actions and ("deploy", "planned") in actions
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        assert (
            "retrain planned" in card.locator(".last").inner_text()
            or "deploy planned" in card.locator(".last").inner_text()
        )

        page.fill("#f-event", drift[0]["id"])
        page.click("#filters button[type=submit]")
        expect(page.locator("#decisions tr.row")).to_have_count(1)
        row = page.locator("#decisions tr.row").first
        assert row.locator("td").nth(2).inner_text() == "retrain"
        row.click()
        record = json.loads(page.locator("#decisions tr.detail pre").first.inner_text())
        assert record["trigger"]["event_id"] == drift[0]["id"] and record["details"]["rendered"]["type"] == "pipeline"
        page.screenshot(path=str(shots(tmp_path) / "console-timeline.png"), full_page=True)

        page.click("#f-clear")
        page.locator('article.model[data-model="churn-classifier"] button[data-action="retrain"]').click()
        page.wait_for_selector("#result .decision")
        result = page.locator("#result .decision")
        assert "Dry-run retrain churn-classifier: retrain planned" in result.inner_text()
        decision_id = result.get_attribute("data-id")
        page.wait_for_selector(f'#decisions tr.row[data-id="{decision_id}"]')
        shown = json.loads(result.locator("pre").inner_text())
        assert shown["details"]["dry_run"] is True and shown["trigger"]["caller"] == {"kind": "function key"}
        page.screenshot(path=str(shots(tmp_path) / "console.png"), full_page=True)


def rolling_out(tmp_path: Path, mirror: bool = False) -> World:
    """A world whose rollout of a new version has begun (``mirror``: under a policy with a shadow stage
    of 10%), with a steady health source."""
    text = (REPO / "examples" / "policy.yaml").read_text()
    if mirror:
        text = text.replace("      rollout:\n", "      rollout:\n        mirror: {percent: 10, bake: 10m}\n", 1)
    actions = RecordingActions(traffic={ENDPOINT: {"blue": 100}})
    world = World(
        LedgerSpec("sqlite", str(tmp_path / "l.db")),
        policy=parse_policy(text),
        actions=actions,
        health={"metrics": SteadyHealth()},
    )
    deploy = world.manual("deploy", version="4", reason="new model")
    actions.provisioning[str(deploy.job["name"])] = "Succeeded"  # type: ignore[index]
    return world


@pytest.fixture
def rollout_host(tmp_path: Path) -> Iterator[tuple[str, World]]:
    """The app in this process on a free port, on a world whose rollout has taken a step."""
    world = rolling_out(tmp_path)
    world.reconcile()  # step 1: 10%
    world.clock.advance(minutes=14)  # the 10-minute bake, then the metrics' 3 minutes of lag
    report = world.reconcile()  # judged healthy: step 2, 50%
    assert [r["state"] for r in report.rollouts] == ["stepped"], report.rollouts
    world.clock.advance(minutes=3)
    with hosting(world) as url:
        yield url, world


def test_a_rollout_in_flight_shows_its_split_step_bake_and_health_against_the_limits(
    rollout_host: tuple[str, World], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    url, world = rollout_host
    with browser_page() as page:
        page.goto(f"{url}/api/console")
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        card.locator(".rollout").wait_for()
        assert card.locator(".state").inner_text() == "rolling out"
        assert "step 2 of 3 (50%)" in card.locator(".rollout-step").inner_text()
        traffic = card.locator(".traffic").inner_text()
        assert traffic.startswith("Traffic: ") and "blue 50%" in traffic
        assert "of bake left" in card.locator(".bake").inner_text()
        health = card.locator(".health").inner_text()
        assert "0.50% failures over 400 requests (limit 5.00%, baseline 1.00%)" in health
        caption = card.locator(".chart-caption").inner_text()
        assert (
            caption.startswith("Failure rate of the candidate at each judged step")
            and "step 1 0.50% (healthy)" in caption
        )
        assert card.locator(".chart rect").count() == 1
        assert card.locator('button[data-action="pause"]').is_enabled()
        assert not card.locator('button[data-action="resume"]').is_enabled()
        page.screenshot(path=str(shots(tmp_path) / "console-rollout.png"), full_page=True)

        card.locator('button[data-action="pause"]').click()
        page.wait_for_selector("#result .decision")
        assert "Pause sklearn_regression_model: pause" in page.locator("#result .decision").inner_text()
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        expect(card.locator(".state")).to_have_text("rollout paused")  # the page's CSP allows no eval
        assert card.locator('button[data-action="resume"]').is_enabled()
    assert world.worker.ledger.get_model("sklearn_regression_model").flights["rollout"].data["rollout"]["paused"]


def test_a_rollout_in_its_shadow_stage_shows_the_mirror_then_the_shadow_verdict(tmp_path: Path) -> None:
    world = rolling_out(tmp_path, mirror=True)
    assert [r["state"] for r in world.reconcile().rollouts] == ["mirroring"]
    with hosting(world) as url, browser_page() as page:
        page.goto(f"{url}/api/console")
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        card.locator(".rollout").wait_for()
        assert "shadow stage (10% mirrored, no live traffic)" in card.locator(".rollout-step").inner_text()
        traffic = card.locator(".traffic").inner_text()
        assert "blue 100%" in traffic and "mirrored to the candidate: 10%" in traffic
        assert "of bake left" in card.locator(".bake").inner_text()
        world.clock.advance(minutes=14)
        assert [r["state"] for r in world.reconcile().rollouts] == ["stepped"]  # healthy: mirror cleared, 10% live
        page.reload()
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        card.locator(".rollout").wait_for()
        assert "step 1 of 3 (10%)" in card.locator(".rollout-step").inner_text()
        assert "mirrored" not in card.locator(".traffic").inner_text()
        assert "shadow 0.50% (healthy)" in card.locator(".chart-caption").inner_text()


def test_the_console_is_behind_a_key_and_lets_nothing_else_run(tmp_path: Path) -> None:
    from function_app.triggers.console import page

    html = page("n0nce")
    assert html.count('nonce="n0nce"') == 2 and "{{" not in html
    assert "<script src" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "innerHTML" not in (REPO / "function_app" / "console" / "console.js").read_text()


def test_the_stop_switch_from_the_console_freezes_a_model_and_shows_why(tmp_path: Path) -> None:
    """The Freeze button asks why, sets the stop switch on that model only, and its card says FROZEN
    with the reason; Unfreeze lifts it."""
    from playwright.sync_api import expect

    world = rolling_out(tmp_path)
    with hosting(world) as url, browser_page() as page:
        page.goto(f"{url}/api/console")
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        card.wait_for()
        assert card.locator(".frozen").inner_text() == "no"
        assert not card.locator('button[data-action="unfreeze"]').is_enabled()

        card.locator('button[data-action="freeze"]').click()
        page.wait_for_selector("#result .decision")
        assert "Freeze sklearn_regression_model: freeze submitted" in page.locator("#result .decision").inner_text()
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        expect(card.locator(".frozen")).to_contain_text("FROZEN (retrain, deploy, promote)")
        assert "frozen from the console" in card.locator(".frozen").inner_text()
        other = page.locator('article.model[data-model="churn-classifier"]')
        assert other.locator(".frozen").inner_text() == "no"
        switch = world.worker.ledger.get_model("sklearn_regression_model").frozen
        assert switch is not None and switch["why"] == "frozen from the console" and switch["by"] == "function key"

        card.locator('button[data-action="unfreeze"]').click()
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        expect(card.locator(".frozen")).to_have_text("no")
    assert world.worker.ledger.get_model("sklearn_regression_model").frozen is None


def test_a_model_in_a_freeze_window_shows_the_window_on_its_card(tmp_path: Path) -> None:
    """A weekly window in Berlin's time (the tests' clock: Wednesday 11:00 there) freezes deploys of every
    model: each card says FROZEN with the window's name and when it ends; the stop switch stays free to set."""
    window = "  freeze:\n    - {name: release freeze, timezone: Europe/Berlin, days: [wed], from: '09:00', to: '17:00', actions: [deploy]}\n"
    text = (REPO / "examples" / "policy.yaml").read_text().replace("defaults:\n", "defaults:\n" + window, 1)
    world = World(LedgerSpec("sqlite", str(tmp_path / "l.db")), policy=parse_policy(text))
    with hosting(world) as url, browser_page() as page:
        page.goto(f"{url}/api/console")
        for model in ("sklearn_regression_model", "churn-classifier"):
            card = page.locator(f'article.model[data-model="{model}"]')
            card.wait_for()
            said = card.locator(".frozen").inner_text()
            assert said.startswith("FROZEN (deploy): ") and "freeze window 'release freeze'" in said, said
            assert "until 2026-11-25T16:00:00Z" in said
            assert card.locator('button[data-action="freeze"]').is_enabled()
            assert not card.locator('button[data-action="unfreeze"]').is_enabled()


def test_a_retrain_in_flight_says_what_started_it(tmp_path: Path) -> None:
    from tests.azure_world import AzureWorld
    from tests.builders import with_retrain

    world = AzureWorld(tmp_path, policy=with_retrain({"max_age": "30d"}))
    world.arm.models[("sklearn_regression_model", "3")]["systemData"]["createdAt"] = "2026-10-01T09:00:00Z"
    [started] = world.reconcile().started
    [model] = [m for m in world.worker.models() if m["model"] == "sklearn_regression_model"]
    assert model["in_flight"]["retrain"]["why"] == started.reason
    with hosting(world) as url, browser_page() as page:
        page.goto(f"{url}/api/console")
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        card.locator(".job").wait_for()
        why = card.locator(".job-why").inner_text()
        assert why.startswith("started by model age: the champion sklearn_regression_model:3") and "30d" in why


def test_markup_a_workspace_account_writes_into_a_run_is_shown_as_text_and_runs_nothing(tmp_path: Path) -> None:
    """An upstream run's display name is whoever runs jobs in the experiment's to choose; it reaches the card
    (what started the retrain) and the decisions table. Markup in it stays text: no element, no script."""
    from tests.azure_world import AzureWorld
    from tests.builders import run_event, with_retrain_on

    markup = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"
    world = AzureWorld(tmp_path, policy=with_retrain_on({"runs": [{"experiment": "ingest-daily"}]}))
    world.arm.add_job("ingest-1", experiment="ingest-daily", display_name=markup, outputs=("data",))
    event = run_event(run_id="ingest-1", experiment="ingest-daily", topic=world.settings.workspace_id)
    [started] = world.deliver(event).decisions
    assert started.outcome == "submitted" and markup in started.reason
    with hosting(world) as url, browser_page() as page:
        page.goto(f"{url}/api/console")
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        card.locator(".job").wait_for()
        page.locator("#decisions tr.row").first.wait_for()

        assert markup[:60] in card.locator(".job-why").inner_text()
        assert markup[:60] in page.locator("#decisions tr.row").first.inner_text()
        assert page.locator("main img, main script, #decisions img").count() == 0
        assert page.title() != "pwned"
