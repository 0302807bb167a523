"""Notifications out: the decisions of the outbox as CloudEvents 1.0 on an Event Grid custom topic,
through the real ``EventGridPublisherClient`` (the only module that imports azure-eventgrid for it).

In Azure the client authenticates with the managed identity
(the worker's one credential, :func:`function_app.runtime.make_credential`, which holds the topic's
``EventGrid Data Sender`` role; the topic's local auth is off). A key (``AzureKeyCredential``) is for
a local receiver and tests only. One publish is one attempt with short timeouts (the SDK's own
retries off, set once on the client): the outbox retries later, so a decision is never slowed by more
than one attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError

from function_app.adapters.azure_errors import describe, status_of, translate
from function_app.adapters.clients import LazyClient
from handlers.errors import TransientError
from handlers.ports import Notification, Refused
from handlers.records import from_iso

if TYPE_CHECKING:
    from function_app.settings import Settings

# One attempt, and short: a topic that does not answer costs a delivery at most these seconds. Given
# to the client once, when it is built. Not to each send: azure-eventgrid 4.22's public
# EventGridPublisherClient drops the options it is built with for a basic (custom) topic, and passes
# those given to ``send`` on to each CloudEvent's model as well as to the pipeline, which logs three
# warnings per event per send ("... is not a known attribute"). So the client is the one the public
# client wraps for a basic topic, ``azure.eventgrid._legacy.EventGridPublisherClient``, which builds
# its pipeline (retry policy, transport) from its options; azure-eventgrid is pinned exactly in
# requirements.txt for that private import.
CLIENT_OPTIONS: dict[str, Any] = {"retry_total": 0, "connection_timeout": 2.0, "read_timeout": 3.0}


class EventGridNotifier:
    """``client``: an ``EventGridPublisherClient`` or a function that builds one (on first publish);
    a test may pass a client with its own transport. ``source``: the CloudEvents' ``source`` (the
    workspace the service acts for)."""

    def __init__(self, client: Any, source: str) -> None:
        self._client = LazyClient(client)
        self.source = source

    @classmethod
    def build(
        cls, endpoint: str, source: str, credential: Any, options: dict[str, Any] | None = None
    ) -> EventGridNotifier:
        """A notifier that builds its client on first use, with ``options`` (CLIENT_OPTIONS by default)."""
        settings = dict(CLIENT_OPTIONS if options is None else options)

        def client() -> Any:
            from azure.eventgrid._legacy import EventGridPublisherClient

            return EventGridPublisherClient(endpoint, credential, **settings)

        return cls(client, source)

    @classmethod
    def from_settings(cls, settings: Settings, credential: Any) -> EventGridNotifier:
        """The topic of RETRAIN_NOTIFY_TOPIC_ENDPOINT with ``credential`` (the worker's managed identity),
        or with RETRAIN_NOTIFY_TOPIC_KEY when one is set (a local receiver, tests)."""
        if not settings.notify_topic_endpoint:
            raise ValueError("RETRAIN_NOTIFY_TOPIC_ENDPOINT is empty: notifications are off")
        if settings.notify_topic_key:
            from azure.core.credentials import AzureKeyCredential

            credential = AzureKeyCredential(settings.notify_topic_key)
        return cls.build(settings.notify_topic_endpoint, settings.workspace_id, credential)

    def publish(self, notifications: Sequence[Notification]) -> None:
        """Send one batch of CloudEvents; TransientError on an outage, Refused (a PermanentError) with the
        topic's status and the first line of its message (no payload) on a refusal."""
        from azure.core.messaging import CloudEvent

        events = [
            CloudEvent(
                source=self.source,
                type=n.type,
                subject=n.subject or None,
                data=n.data,
                id=n.id,
                time=from_iso(n.time),
                datacontenttype="application/json",
            )
            for n in notifications
        ]
        what = f"publishing {len(events)} notification(s) to the topic"
        try:
            self._client.get().send(events)
        except AzureError as exc:
            error = translate(exc, what)
            status = status_of(exc)
            if isinstance(error, TransientError) or status is None:
                raise error from exc
            raise Refused(f"{what}: the topic answered {describe(exc)}", status) from exc
