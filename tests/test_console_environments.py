"""The operator console of a prod (downstream) environment, in a real headless Chromium (issue 25): a
deploy of a registry version says where the version came from, and a model's card names the upstream
it picks versions up from and the identity whose versions it takes (environment.upstream_identity)."""

from __future__ import annotations

from pathlib import Path

import pytest

from handlers.policy_file import parse_policy
from tests.browser import browser_page
from tests.builders import WORKSPACE, promotion_event
from tests.conftest import REPO
from tests.fakes import RecordingActions
from tests.hosts import hosting
from tests.ledgers import LedgerSpec
from tests.world import World

pytestmark = [pytest.mark.slow, pytest.mark.browser]

UPSTREAM = WORKSPACE.replace("/workspaces/", "/workspaces/dev-")


def test_a_version_picked_up_from_the_registry_says_where_it_came_from(tmp_path: Path) -> None:
    """Its row says the registry, the version and whether the upstream's notification (its source) or the
    reconciler's poll told of it."""
    text = (REPO / "examples" / "policy.yaml").read_text()
    environment = (
        f"    environment: {{registry: mlreg-shared, role: downstream, upstream: '{UPSTREAM}', poll_every: 15m, "
        "upstream_identity: [0a1b2c3d-0000-4000-8000-00000000000c]}\n"
    )
    text = text.replace("  sklearn_regression_model:\n", "  sklearn_regression_model:\n" + environment, 1)
    world = World(LedgerSpec("sqlite", str(tmp_path / "l.db")), policy=parse_policy(text), actions=RecordingActions())
    [picked] = world.deliver(promotion_event(source=UPSTREAM)).decisions
    assert picked.details["rendered"]["candidate"]["source"] == "registry"
    with hosting(world) as url, browser_page() as page:
        page.goto(f"{url}/api/console")
        page.wait_for_selector("#decisions tr.row")
        origin = page.locator(f'#decisions tr.row[data-id="{picked.id}"] .origin').inner_text()
        assert origin == f"From registry mlreg-shared, version 4: told by the notification of {UPSTREAM}"
        card = page.locator('article.model[data-model="sklearn_regression_model"]')
        assert card.locator(".environment").inner_text() == (
            f"downstream, registry mlreg-shared, picks up versions from {UPSTREAM}, polled every 15m, "
            "only those created by 0a1b2c3d-0000-4000-8000-00000000000c"
        )
