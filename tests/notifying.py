"""What the notification tests (tests/test_notifications*.py) share: the app's routes they post to, a
notifier for the topic receiver, and the decisions that notify. Their fixtures (``receiver``, the topic;
``served``, the app notifying it) are in tests/conftest.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from function_app.adapters.notifier import EventGridNotifier
from handlers.errors import PermanentError
from handlers.notify import notification_id, notification_of
from handlers.ports import Ledger
from tests.builders import WORKSPACE
from tests.topic_receiver import TopicReceiver
from tests.world import MODEL, World

if TYPE_CHECKING:
    from tests.conftest import Client

RETRAIN = f"/api/models/{MODEL}/retrain"
DEPLOY = f"/api/models/{MODEL}/deploy"
EVENTS = "/runtime/webhooks/eventgrid?functionName=on_workspace_event"


def notifier_for(receiver: TopicReceiver) -> EventGridNotifier:
    notifier: EventGridNotifier = receiver.notifier(WORKSPACE)
    return notifier


def notifying_ids(ledger: Ledger) -> list[str]:
    """The notification ids of every decision in the ledger that notifies."""
    notes = [notification_of(r) for r in ledger.decisions(limit=1000)]
    return sorted(n.id for n in notes if n is not None)


def post(client: Client, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, _, out = client.call("POST", path, body, headers)
    return status, out


def failed_deploys(world: World, n: int) -> list[str]:
    """``n`` failed deploys (each notifies), left pending in the outbox; their notification ids."""
    ids = []
    for k in range(n):
        world.actions.fail_with = PermanentError(f"deployment refused: quota {k}")
        record = world.manual("deploy", version=str(k + 1))
        ids.append(notification_id(record.id, "failed"))
    world.actions.fail_with = None
    return ids
