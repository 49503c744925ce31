"""Fixtures of the Pub/Sub integration tests: one emulator per session (started by
tests.servers.pubsub), and fresh topics and subscriptions for every test, since the
emulator has no reset."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.cloud import pubsub_v1

from taskorbit.message import Message
from taskorbit.transports.pubsub import PubSubTransport
from tests.contract import receive_until
from tests.servers import skip_unless_ci
from tests.servers.pubsub import EMULATOR_INSTALL, PROJECT, PubSubServer

# Pub/Sub's smallest ack deadline; the contract's lease test holds a message for
# 2.5 of them, so it is the slowest test here.
ACK_DEADLINE_S = 10
# The smallest max_delivery_attempts Pub/Sub accepts for a dead-letter policy.
MIN_DELIVERY_ATTEMPTS = 5


@dataclass
class Resources:
    """One test's topic and subscription, and where its dead letters go."""

    topic: str
    subscription: str
    dlq_topic: str
    dlq_subscription: str
    made: list[Any] = field(default_factory=list)


class PubSubAdmin:
    """Creates uniquely named resources on the emulator and transports on them."""

    def __init__(self, server: PubSubServer) -> None:
        self.server = server
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.transports: list[PubSubTransport] = []

    def resources(
        self,
        *,
        dead_letter_policy: bool = False,
        ordering: bool = False,
        max_delivery_attempts: int = MIN_DELIVERY_ATTEMPTS,
        ack_deadline_s: int = ACK_DEADLINE_S,
    ) -> Resources:
        name = f"t-{uuid.uuid4().hex[:12]}"
        res = Resources(
            topic=f"projects/{PROJECT}/topics/{name}",
            subscription=f"projects/{PROJECT}/subscriptions/{name}-sub",
            dlq_topic=f"projects/{PROJECT}/topics/{name}-dlq",
            dlq_subscription=f"projects/{PROJECT}/subscriptions/{name}-dlq-sub",
        )
        for topic in (res.topic, res.dlq_topic):
            self.publisher.create_topic(name=topic)
        # A dead-letter topic keeps nothing without a subscription on it.
        self.subscriber.create_subscription(
            request={
                "name": res.dlq_subscription,
                "topic": res.dlq_topic,
                "ack_deadline_seconds": 10,
            }
        )
        request: dict[str, Any] = {
            "name": res.subscription,
            "topic": res.topic,
            "ack_deadline_seconds": ack_deadline_s,
            "enable_message_ordering": ordering,
        }
        if dead_letter_policy:
            request["dead_letter_policy"] = {
                "dead_letter_topic": res.dlq_topic,
                "max_delivery_attempts": max_delivery_attempts,
            }
        self.subscriber.create_subscription(request=request)
        return res

    def second_subscription(self, res: Resources, *, suffix: str = "other") -> Resources:
        """Another subscription of ``res.topic``, made like the first (dead-letter
        policy and ordering included), as a second application would have."""
        first = self.subscriber.get_subscription(subscription=res.subscription)
        other = f"{res.subscription}-{suffix}"
        request: dict[str, Any] = {
            "name": other,
            "topic": res.topic,
            "ack_deadline_seconds": first.ack_deadline_seconds,
            "enable_message_ordering": first.enable_message_ordering,
        }
        if first.dead_letter_policy.dead_letter_topic:
            request["dead_letter_policy"] = {
                "dead_letter_topic": first.dead_letter_policy.dead_letter_topic,
                "max_delivery_attempts": first.dead_letter_policy.max_delivery_attempts,
            }
        self.subscriber.create_subscription(request=request)
        return Resources(res.topic, other, res.dlq_topic, res.dlq_subscription)

    def publish_raw(self, res: Resources, data: bytes, **attributes: str) -> None:
        """Publish as a foreign or buggy producer would, with the google client."""
        self.publisher.publish(res.topic, data, **attributes).result(timeout=30)

    def transport(self, res: Resources, **options: Any) -> PubSubTransport:
        options.setdefault("ack_deadline_s", ACK_DEADLINE_S)
        transport = PubSubTransport(res.subscription, res.topic, **options)
        self.transports.append(transport)
        return transport

    def dead_letter_reader(self, res: Resources) -> PubSubTransport:
        return self.transport(res_for_dlq(res))

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
        self.publisher.stop()
        self.subscriber.close()


def res_for_dlq(res: Resources) -> Resources:
    """The dead-letter topic seen as a queue of its own."""
    return Resources(res.dlq_topic, res.dlq_subscription, res.dlq_topic, res.dlq_subscription)


def read_all(transport: PubSubTransport, *, timeout: float = 10.0) -> list[Message]:
    """Everything waiting: the first message within ``timeout``, then whatever
    follows until a pull comes back empty. Nothing is acked."""
    got = receive_until(transport, 1, timeout=timeout)
    while got:
        more = transport.receive(100, timeout=1.0)
        if not more:
            break
        got += more
    return got


def drain(transport: PubSubTransport, *, expect: int, timeout: float = 15.0) -> list[Message]:
    """Receive and ack until ``expect`` messages arrived or ``timeout`` passed."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        batch = transport.receive(100, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        if batch:
            transport.ack(batch)
            got.extend(batch)
    return got


@pytest.fixture
def pubsub(pubsub_emulator: PubSubServer) -> Iterator[PubSubAdmin]:
    admin = PubSubAdmin(pubsub_emulator)
    yield admin
    admin.close()


def require_emulator(server: PubSubServer, what: str = "this") -> None:
    """Skip locally what only Google's emulator does (pstest has no dead-letter
    forwarding, no delivery_attempt and no ordering); in CI fail instead, since CI
    must run every test."""
    if server.kind != "emulator":
        skip_unless_ci(
            f"{server.kind} does not implement {what}; Google's emulator does: {EMULATOR_INSTALL}"
        )


@pytest.fixture
def needs_emulator(pubsub_emulator: PubSubServer) -> None:
    require_emulator(pubsub_emulator)


ReadDeadLetters = Callable[[], list[Message]]
