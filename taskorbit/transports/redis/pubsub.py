"""Redis Pub/Sub: broadcast, at-most-once.

Every subscribed worker gets every message published while it is subscribed; a
message published while no worker listens, or while a worker is disconnected, is
gone. Nothing is acknowledged, delayed or dead-lettered by Redis: this transport is
for notifications (cache invalidation, live updates), not for work that must happen.

A topic is published on the channel ``channel_prefix + topic``. A worker subscribes
to the pattern ``channel_prefix*`` (all topics) or to the channels of ``topics``.
The payload is a msgpack envelope with the topic, body, attributes and message id.

Receiving happens in the caller's thread (the runtime's poller): ``receive`` reads
what the socket has, waiting up to ``timeout`` for the first message. There is no
listener thread of our own, so a full ring applies its overflow policy (and fires
on_drop) to exactly the messages the worker could not keep; a worker that falls far
behind is disconnected by Redis (``client-output-buffer-limit pubsub``), logs it,
and resubscribes.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec
import redis

from taskorbit.errors import TransportConnectionError
from taskorbit.message import Message
from taskorbit.transports.base import AckFailure, Transport
from taskorbit.transports.redis.client import (
    Reconnector,
    connect,
    endpoint,
    log,
    ping,
    translated,
)


class _Envelope(msgspec.Struct, array_like=True):
    id: str
    topic: str
    body: bytes
    attributes: dict[str, str] = {}
    not_before: float | None = None
    ordering_key: str | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Envelope).decode
_GLOB_CHARS = re.compile(r"([*?\[\]\\])")


class RedisPubSubTransport(Transport):
    """Broadcast messages over Redis Pub/Sub channels, at most once."""

    name: ClassVar[str] = "redis-pubsub"
    durable: ClassVar[bool] = False
    acknowledges: ClassVar[bool] = False
    push: ClassVar[bool] = True
    max_batch: ClassVar[int] = 1000
    needs_lease: ClassVar[bool] = False

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        channel_prefix: str = "taskorbit:",
        topics: Sequence[str] | None = None,
    ) -> None:
        self.client = connect(url, client)
        self._owns_client = client is None  # a client the user passed in stays open
        self.channel_prefix = channel_prefix
        self.topics = list(topics) if topics is not None else None
        self._pubsub: Any = None  # created on first subscribe; guarded by self._lock
        self._early: list[Message] = []  # arrived while waiting for the subscribe reply
        self._lock = threading.Lock()
        self._reconnector = Reconnector("redis-pubsub subscriber", endpoint(self.client))

    def channel(self, topic: str) -> str:
        return self.channel_prefix + topic

    def check(self, timeout: float) -> None:
        """PING the server (on a connection of its own, within ``timeout``)."""
        ping(self.client, timeout)

    def describe(self) -> str:
        """``redis://:***@host:6379/0 channels taskorbit:*``."""
        channels = (
            ",".join(self.channel(t) for t in self.topics)
            if self.topics is not None
            else self.channel_prefix + "*"
        )
        return f"{endpoint(self.client)} channels {channels}"

    # -- receiving -------------------------------------------------------------

    def subscribe(self, timeout: float = 5.0) -> None:
        """Subscribe now; messages published after this returns are received.

        ``receive`` subscribes on its first call anyway; call this first when a
        message published before that first call must not be missed (tests, or a
        producer and a consumer started together)."""
        with self._lock:
            self._subscribe(timeout)

    def _subscribe(self, timeout: float) -> None:
        if self._pubsub is not None:
            return
        pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
        try:
            self._subscribe_and_confirm(pubsub, timeout)
        except BaseException:
            pubsub.close()
            raise
        self._pubsub = pubsub

    def _subscribe_and_confirm(self, pubsub: Any, timeout: float) -> None:
        with translated():
            if self.topics is None:
                pubsub.psubscribe(_GLOB_CHARS.sub(r"\\\1", self.channel_prefix) + "*")
            else:
                pubsub.subscribe(*(self.channel(t) for t in self.topics))
            # Wait for Redis to confirm, so that what is published next reaches us.
            expected = 1 if self.topics is None else len(self.topics)
            deadline = time.monotonic() + timeout
            while expected and time.monotonic() < deadline:
                reply = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if reply is None:
                    continue
                if reply["type"] in ("subscribe", "psubscribe"):
                    expected -= 1
                elif (message := _to_message(reply)) is not None:
                    self._early.append(message)
        if expected:
            raise TransportConnectionError(f"Redis did not confirm the subscription in {timeout} s")

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        with self._lock:
            try:
                with translated():
                    self._subscribe(timeout=max(timeout, 1.0))
                    messages = self._read(max_messages, timeout)
            except TransportConnectionError as exc:
                # redis-py resubscribes on the next read; what was published in
                # between is lost, as Pub/Sub's at-most-once semantics say.
                self._reconnector.failed(exc, budget_s=timeout)
                return []
            self._reconnector.succeeded()
            return messages

    def _read(self, max_messages: int, timeout: float) -> list[Message]:
        messages, self._early = self._early[:max_messages], self._early[max_messages:]
        deadline = time.monotonic() + timeout
        while len(messages) < max_messages:
            # Wait for the first message only; then take what is already there.
            wait = max(0.0, deadline - time.monotonic()) if not messages else 0.0
            reply = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
            if reply is None:
                if messages or time.monotonic() >= deadline:
                    break
                continue
            message = _to_message(reply)
            if message is not None:
                messages.append(message)
        return messages

    # -- settling: broadcast messages are never given back ----------------------

    def ack(self, messages: Sequence[Message]) -> list[AckFailure]:
        return []

    def nack(self, messages: Sequence[Message], delay: float = 0.0) -> None:
        # Re-publishing would send the message to every other subscriber again.
        if messages:
            log.warning("redis-pubsub cannot redeliver; %d message(s) dropped", len(messages))

    def dead_letter(self, message: Message, reason: str) -> None:
        log.warning(
            "redis-pubsub has no dead-letter queue; dropped %s (topic %s): %s",
            message.id,
            message.topic,
            reason,
        )

    # -- publishing ------------------------------------------------------------

    def publish(self, messages: Sequence[Message]) -> list[str]:
        """One PUBLISH per message, pipelined when there are several."""
        ids = [m.id or uuid.uuid4().hex for m in messages]
        payloads = [
            (self.channel(m.topic), _encode(_envelope(m, i)))
            for m, i in zip(messages, ids, strict=True)
        ]
        with translated():
            if len(payloads) == 1:
                self.client.publish(*payloads[0])
            elif payloads:
                pipe = self.client.pipeline(transaction=False)
                for channel, payload in payloads:
                    pipe.publish(channel, payload)
                pipe.execute()
        return ids

    def close(self) -> None:
        with self._lock:
            if self._pubsub is not None:
                self._pubsub.close()
                self._pubsub = None
        if self._owns_client:
            self.client.close()


def _envelope(message: Message, message_id: str) -> _Envelope:
    return _Envelope(
        id=message_id,
        topic=message.topic,
        body=message.body,
        attributes=message.attributes,
        not_before=message.not_before,
        ordering_key=message.ordering_key,
    )


def _to_message(reply: dict[str, Any]) -> Message | None:
    """A Pub/Sub reply as a Message; None (logged) for what is not ours."""
    if reply.get("type") not in ("message", "pmessage"):
        return None
    try:
        env = _decode(reply["data"])
    except (msgspec.DecodeError, TypeError) as exc:
        log.warning("ignored a foreign message on channel %r: %s", reply.get("channel"), exc)
        return None
    return Message(
        topic=env.topic,
        body=env.body,
        attributes=env.attributes,
        id=env.id,
        attempt=1,
        ordering_key=env.ordering_key,
        not_before=env.not_before,
        received_at=time.monotonic(),
    )


__all__ = ["RedisPubSubTransport"]
