"""Both Redis transports pass the shared transport contract."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from taskorbit.message import Message
from taskorbit.transports.redis_pubsub import RedisPubSubTransport
from taskorbit.transports.redis_streams import RedisStreamsTransport
from tests.contract import TransportContract

pytestmark = pytest.mark.integration


class TestRedisStreamsContract(TransportContract):
    @pytest.fixture
    def transport(
        self, make_streams: Callable[..., RedisStreamsTransport]
    ) -> RedisStreamsTransport:
        return make_streams(lease_s=1.5)

    @pytest.fixture
    def read_dead_letters(self, transport: RedisStreamsTransport) -> Callable[[], list[Message]]:
        return transport.dead_letters


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
