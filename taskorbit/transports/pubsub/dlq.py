"""The Pub/Sub dead-letter topic, read through a subscription of its own.

Pub/Sub keeps a message only for the subscriptions that existed when it was
published, so the DLQ needs a subscription created together with the DLQ topic.
By default it is named like the topic (``projects/P/subscriptions/<dlq topic id>``);
:meth:`PubSubDeadLetterQueue.ensure_subscription` creates it.

``list``/``show`` pull and then release (ack deadline 0) what they pulled.
``redrive`` publishes each copy to the main topic through the transport, waits for
the publish to be confirmed, and only then acknowledges the DLQ message; it returns
each letter with the copy's new message id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from taskorbit.dlq import ALL, DeadLetter, Letters, Selection, publish_copies
from taskorbit.errors import ConfigurationError, TransportError
from taskorbit.message import TOPIC_ATTR, Message
from taskorbit.transports.pubsub import PubSubTransport

_PULL_TIMEOUT_S = 3.0


def default_subscription(dlq_topic: str) -> str:
    return dlq_topic.replace("/topics/", "/subscriptions/", 1)


class PubSubDeadLetterQueue:
    def __init__(
        self,
        transport: PubSubTransport,
        *,
        subscription: str | None = None,
        subscriber: Any = None,
    ) -> None:
        if transport.dlq_topic is None:
            raise ConfigurationError(
                "this PubSubTransport has no dlq_topic: a subscription's own dead-letter "
                "policy keeps dead letters in a topic taskorbit was not told about; pass "
                "dlq_topic= to PubSubTransport"
            )
        self.transport = transport
        self.subscription = subscription or default_subscription(transport.dlq_topic)
        self.subscriber = subscriber or pubsub_v1.SubscriberClient()

    def ensure_subscription(self) -> None:
        """Create the DLQ's subscription if it does not exist yet."""
        try:
            self.subscriber.create_subscription(
                request={
                    "name": self.subscription,
                    "topic": self.transport.dlq_topic,
                    "ack_deadline_seconds": 60,
                }
            )
        except gexc.AlreadyExists:
            pass
        except gexc.GoogleAPICallError as e:
            raise TransportError(f"cannot create {self.subscription}: {e}") from e

    def _pull(self) -> list[tuple[str, DeadLetter]]:
        try:
            response = self.subscriber.pull(
                request={"subscription": self.subscription, "max_messages": 100},
                timeout=_PULL_TIMEOUT_S,
            )
        except gexc.DeadlineExceeded:
            return []
        except gexc.GoogleAPICallError as e:
            raise TransportError(f"pull from {self.subscription} failed: {e}") from e
        pulled = []
        for received in response.received_messages:
            wire = received.message
            attributes = {k: v for k, v in wire.attributes.items() if k != TOPIC_ATTR}
            message = Message(
                topic=wire.attributes.get(TOPIC_ATTR, ""),
                body=bytes(wire.data),
                attributes=attributes,
                id=wire.message_id,
                ordering_key=wire.ordering_key or None,
            )
            pulled.append((received.ack_id, DeadLetter.of(message)))
        return pulled

    def _sweep(
        self,
        selection: Selection,
        limit: int | None,
        act: Callable[[list[str]], None] | None,
        *,
        copy: bool,
    ) -> Letters:
        chosen: list[DeadLetter] = []
        held: list[str] = []
        try:
            while limit is None or len(chosen) < limit:
                page = self._pull()
                if not page:
                    break
                matched: list[tuple[str, DeadLetter]] = []
                for ack_id, letter in page:
                    room = limit is None or len(chosen) + len(matched) < limit
                    if room and selection.matches(letter):
                        matched.append((ack_id, letter))
                    else:
                        held.append(ack_id)
                letters = [x for _, x in matched]
                if act is None:
                    held += [ack_id for ack_id, _ in matched]
                else:
                    if copy:
                        letters = publish_copies(self.transport, letters)  # copy first
                    act([ack_id for ack_id, _ in matched])
                chosen += letters
        finally:
            with contextlib.suppress(Exception):
                self._release(held)
        return chosen

    def _release(self, ack_ids: list[str]) -> None:
        if ack_ids:
            self.subscriber.modify_ack_deadline(
                request={
                    "subscription": self.subscription,
                    "ack_ids": ack_ids,
                    "ack_deadline_seconds": 0,
                }
            )

    def _delete(self, ack_ids: list[str]) -> None:
        if ack_ids:
            try:
                self.subscriber.acknowledge(
                    request={"subscription": self.subscription, "ack_ids": ack_ids}
                )
            except gexc.GoogleAPICallError as e:
                raise TransportError(f"acknowledge on {self.subscription} failed: {e}") from e

    def list(self, limit: int = 100, selection: Selection | None = None) -> Letters:
        return self._sweep(selection or ALL, limit, None, copy=False)

    def show(self, message_id: str) -> DeadLetter | None:
        found = self._sweep(Selection.of([message_id]), 1, None, copy=False)
        return found[0] if found else None

    def redrive(
        self, selection: Selection, *, limit: int | None = None, dry_run: bool = False
    ) -> Letters:
        if dry_run:
            return self._sweep(selection or ALL, limit, None, copy=False)
        return self._sweep(selection, limit, self._delete, copy=True)

    def purge(
        self, selection: Selection, *, limit: int | None = None, dry_run: bool = False
    ) -> Letters:
        return self._sweep(selection, limit, None if dry_run else self._delete, copy=False)


def dead_letter_queue(transport: PubSubTransport) -> PubSubDeadLetterQueue:
    """The dead-letter queue of ``transport`` (what ``taskorbit dlq`` uses)."""
    return PubSubDeadLetterQueue(transport)
