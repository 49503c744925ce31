"""The publishing side of the Pub/Sub transport: PublisherClients, their futures,
and creating topics on demand."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from taskorbit.errors import TransportError
from taskorbit.transports.pubsub.errors import ordering_not_enabled, translate

#: (data, attributes, ordering key) of one message, ready for the wire.
Prepared = tuple[bytes, dict[str, str], str]


class Publishers:
    """One PublisherClient without message ordering and, once a key is used, one with.

    Ordering is enabled only on a second client because an ordered client sends one
    batch per key at a time and retries a failed publish forever (the futures here
    are waited on with a timeout, so a caller is never stuck). A client passed in by
    the user is used for both and must have ordering enabled if keys are used.
    """

    def __init__(
        self, given: Any, batch_settings: pubsub_v1.types.BatchSettings, rpc_timeout_s: float
    ) -> None:
        self._given = given
        self._batch_settings = batch_settings
        self._rpc_timeout_s = rpc_timeout_s
        self._clients: dict[bool, Any] = {}  # ordering enabled? -> client; guarded by _lock
        self._lock = threading.Lock()

    def client(self, *, ordering: bool) -> Any:
        if self._given is not None:
            return self._given
        with self._lock:
            client = self._clients.get(ordering)
            if client is None:
                options = pubsub_v1.types.PublisherOptions(enable_message_ordering=ordering)
                client = pubsub_v1.PublisherClient(
                    batch_settings=self._batch_settings, publisher_options=options
                )
                self._clients[ordering] = client
            return client

    def publish(self, topic: str, prepared: Sequence[Prepared]) -> list[str]:
        """Hand every message to the client's batcher, then wait for all of them;
        returns the server-assigned message ids in order."""
        pending = []
        for data, attributes, key in prepared:
            client = self.client(ordering=bool(key))
            try:
                future = client.publish(topic, data, ordering_key=key, **attributes)
            except RuntimeError as error:
                if key and "ordering" in str(error).lower():
                    raise ordering_not_enabled(topic) from error
                raise TransportError(f"publish to {topic}: {error}") from error
            pending.append((client, key, future))
        ids: list[str] = []
        for client, key, future in pending:
            try:
                ids.append(str(future.result(timeout=self._rpc_timeout_s)))
            except Exception as error:
                if key:
                    # An ordered client pauses a key after a failure until told to resume.
                    client.resume_publish(topic, key)
                raise translate(error, f"publish to {topic}") from error
        return ids

    def create_topics(self, topics: Iterable[str]) -> None:
        client = self.client(ordering=False)
        for topic in topics:
            try:
                client.create_topic(name=topic)
            except gexc.AlreadyExists:
                pass
            except gexc.GoogleAPICallError as error:
                raise translate(error, f"create topic {topic}") from error

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.stop()  # flushes anything still batched
