"""The Pub/Sub dead-letter topic, read through its own subscription, on the emulator."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from google.cloud import pubsub_v1

from taskorbit.dlq import REDRIVEN_FROM_ATTR, Selection, for_transport
from taskorbit.message import Message
from taskorbit.transports.pubsub import PubSubTransport
from taskorbit.transports.pubsub.dlq import PubSubDeadLetterQueue
from tests.servers.pubsub import PROJECT, PubSubServer


@pytest.fixture
def transport(pubsub_emulator: PubSubServer) -> Iterator[PubSubTransport]:
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    transport = PubSubTransport(
        f"projects/{PROJECT}/subscriptions/{name}",
        f"projects/{PROJECT}/topics/{name}",
        dlq_topic=f"{name}-dead",
        create=True,
        ack_deadline_s=10,
    )
    yield transport
    transport.close()


def receive(transport: PubSubTransport, count: int) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + 20
    while len(got) < count and time.monotonic() < deadline:
        got += transport.receive(count - len(got), 2.0)
    return got


def test_dead_letters_are_listed_and_redriven_to_the_main_topic(transport: PubSubTransport) -> None:
    dlq = for_transport(transport)
    assert isinstance(dlq, PubSubDeadLetterQueue)
    dlq.ensure_subscription()  # before anything is dead-lettered, or Pub/Sub keeps nothing
    transport.publish([Message("job", b"1", attributes={"k": "v"}), Message("job", b"2")])
    for m in receive(transport, 2):
        transport.dead_letter(m, f"bad {m.body.decode()}")

    listed = dlq.list()
    assert sorted(x.reason for x in listed) == ["bad 1", "bad 2"]
    assert {x.topic for x in listed} == {"job"}

    moved = dlq.redrive(Selection.of(reason="bad 1"))
    assert [x.message.body for x in moved] == [b"1"]
    [back] = receive(transport, 1)
    assert (back.topic, back.body, back.attempt) == ("job", b"1", 1)
    # A new message: the id redrive reported, naming the dead letter it came from.
    assert back.attributes == {"k": "v", REDRIVEN_FROM_ATTR: moved[0].id}
    assert back.id == moved[0].redriven_as != moved[0].id
    assert [x.reason for x in dlq.list()] == ["bad 2"]


def test_a_malformed_dead_letter_is_listed_as_received_and_redriven_readable(
    transport: PubSubTransport,
) -> None:
    dlq = for_transport(transport)
    assert isinstance(dlq, PubSubDeadLetterQueue)
    dlq.ensure_subscription()
    assert transport.topic is not None
    publisher = pubsub_v1.PublisherClient()
    try:
        raw = {"taskorbit-topic": "job", "taskorbit-attempt": "two", "k": "v"}
        publisher.publish(transport.topic, b"3", **raw).result(timeout=30)
    finally:
        publisher.stop()
    [bad] = receive(transport, 1)
    assert bad.malformed is not None
    transport.dead_letter(bad, f"malformed message: {bad.malformed}")

    [letter] = dlq.list()
    assert letter.reason.startswith("malformed message: taskorbit-attempt is 'two'")
    assert letter.message.attributes["taskorbit-attempt"] == "two"  # kept as received

    assert [x.message.body for x in dlq.redrive(Selection.of([letter.id]))] == [b"3"]
    [back] = receive(transport, 1)
    assert (back.topic, back.body, back.attempt, back.malformed) == ("job", b"3", 1, None)
    assert back.attributes == {"k": "v", REDRIVEN_FROM_ATTR: letter.id}
