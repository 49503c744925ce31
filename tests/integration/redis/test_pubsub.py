"""Redis Pub/Sub: broadcast to every subscriber, at most once."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from taskorbit.message import Message
from taskorbit.transports.redis.pubsub import RedisPubSubTransport
from tests.contract import new_message, receive_until

pytestmark = pytest.mark.integration

Make = Callable[..., RedisPubSubTransport]


@pytest.fixture
def make_pubsub(redis_url: str) -> Iterator[Make]:
    prefix = f"ps-{uuid.uuid4().hex[:6]}:"
    made: list[RedisPubSubTransport] = []

    def make(**options: Any) -> RedisPubSubTransport:
        transport = RedisPubSubTransport(url=redis_url, channel_prefix=prefix, **options)
        transport.subscribe()
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


def test_every_subscriber_gets_every_message(make_pubsub: Make) -> None:
    first, second, producer = make_pubsub(), make_pubsub(), make_pubsub()
    sent = [new_message(f"topic.{i % 3}") for i in range(50)]
    ids = producer.publish(sent)
    for subscriber in (first, second):
        got = receive_until(subscriber, 50, batch=100)
        assert [(m.topic, m.body, m.id) for m in got] == [
            (m.topic, m.body, i) for m, i in zip(sent, ids, strict=True)
        ]


def test_a_subscriber_to_some_topics_gets_only_those(make_pubsub: Make) -> None:
    picky = make_pubsub(topics=["wanted"])
    producer = make_pubsub()
    producer.publish([new_message("unwanted"), new_message("wanted")])
    got = receive_until(picky, 2, timeout=1.0)
    assert [m.topic for m in got] == ["wanted"]


def test_messages_published_before_subscribing_are_not_received(redis_url: str) -> None:
    producer = RedisPubSubTransport(url=redis_url, channel_prefix="late:")
    producer.publish([new_message()])
    late = RedisPubSubTransport(url=redis_url, channel_prefix="late:")
    assert late.receive(10, timeout=0.3) == []
    producer.close()
    late.close()


def test_a_subscriber_resubscribes_after_its_connection_is_killed(
    make_pubsub: Make, raw_redis: Any
) -> None:
    subscriber, producer = make_pubsub(), make_pubsub()
    raw_redis.client_kill_filter(_type="pubsub", skipme=True)
    sent = new_message()
    got: list[Message] = []
    # Messages sent while it reconnects are lost (at-most-once); later ones arrive.
    for _ in range(50):
        producer.publish([sent])
        got = subscriber.receive(10, timeout=0.2)
        if got:
            break
    assert got and got[0].body == sent.body


def test_foreign_payloads_on_the_channel_are_ignored(make_pubsub: Make, raw_redis: Any) -> None:
    subscriber = make_pubsub()
    raw_redis.publish(subscriber.channel("t"), b"not an envelope")
    sent = new_message("t")
    make_pubsub().publish([sent])
    got = receive_until(subscriber, 2, timeout=1.0)
    assert [m.body for m in got] == [sent.body]


def test_ack_nack_and_dead_letter_are_harmless_no_ops(
    make_pubsub: Make, caplog: pytest.LogCaptureFixture
) -> None:
    transport = make_pubsub()
    message = Message(topic="t", body=b"x")
    with caplog.at_level(logging.WARNING, logger="taskorbit.redis"):
        assert transport.ack([message]) == []
        transport.nack([message], delay=0.0)  # re-published, it would arrive at once
        transport.dead_letter(message, "no DLQ here")
        assert transport.receive(10, timeout=0.5) == []
    # Dropped, and said so, since nothing else will tell.
    assert [r.getMessage() for r in caplog.records] == [
        "redis-pubsub cannot redeliver; 1 message(s) dropped",
        f"redis-pubsub has no dead-letter queue; dropped {message.id} (topic t): no DLQ here",
    ]


def test_glob_characters_in_the_prefix_match_only_themselves(redis_url: str) -> None:
    starred = RedisPubSubTransport(url=redis_url, channel_prefix="a*:")
    starred.subscribe()
    RedisPubSubTransport(url=redis_url, channel_prefix="abc:").publish([new_message()])
    assert starred.receive(10, timeout=0.3) == []
    starred.close()
