"""Both Redis transports pass the shared transport contract."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from taskorbit.message import Message
from taskorbit.transports.redis.pubsub import RedisPubSubTransport
from taskorbit.transports.redis.streams import RedisStreamsTransport
from tests.contract import BrokenEnvelope, TransportContract

pytestmark = pytest.mark.integration


class TestRedisStreamsContract(TransportContract):
    @pytest.fixture
    def transport(
        self, make_streams: Callable[..., RedisStreamsTransport], request: pytest.FixtureRequest
    ) -> RedisStreamsTransport:
        # Beside another group, keep acked entries (as several groups on one stream
        # must): deleting them would also delete a stray copy before the other group
        # could read it, and hide the fault the test looks for.
        shared = "second_subscriber" in request.fixturenames
        return make_streams(lease_s=1.5, delete_acked=not shared)

    @pytest.fixture
    def read_dead_letters(self, transport: RedisStreamsTransport) -> Callable[[], list[Message]]:
        return transport.dead_letters

    @pytest.fixture
    def broken_envelopes(
        self, transport: RedisStreamsTransport, raw_redis: Any
    ) -> list[BrokenEnvelope]:
        def entry(name: str, field: str, **fields: str | bytes) -> BrokenEnvelope:
            return BrokenEnvelope(name, lambda: raw_redis.xadd(transport.stream, fields), field)

        return [
            entry("no topic or body", "topic", foo="bar"),
            entry("attrs not JSON", "attrs", topic="t", body="b", attrs="{oops"),
            entry("attempt not a number", "attempt", topic="t", body="b", attempt="abc"),
            entry(
                "not-before not a time",
                "taskorbit-not-before",
                topic="t",
                body="b",
                attrs='{"taskorbit-not-before": "soon"}',
            ),
            entry("topic not UTF-8", "topic", topic=b"\xff\xfe", body="b"),
        ]

    @pytest.fixture
    def second_subscriber(
        self, make_streams: Callable[..., RedisStreamsTransport]
    ) -> RedisStreamsTransport:
        return make_streams(lease_s=1.5, group="second-group", delete_acked=False)


class TestRedisPubSubContract(TransportContract):
    @pytest.fixture
    def transport(self, redis_url: str) -> Iterator[RedisPubSubTransport]:
        transport = RedisPubSubTransport(url=redis_url, channel_prefix=f"t{uuid.uuid4().hex[:6]}:")
        transport.subscribe()
        yield transport
        transport.close()

    @pytest.fixture
    def read_dead_letters(self) -> Callable[[], list[Message]]:
        return list  # Pub/Sub has no dead-letter queue; the contract skips those tests
