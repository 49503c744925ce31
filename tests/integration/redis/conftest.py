"""Fixtures of the Redis integration tests: a private redis-server per session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from taskorbit.transports.redis.streams import RedisStreamsTransport


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[object]:
    """A plain redis-py client on the test's (empty) database, for inspecting keys."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def stream_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_streams(redis_url: str, stream_name: str) -> Iterator[object]:
    """Factory of Redis Streams transports on one stream; all closed after the test."""
    made: list[RedisStreamsTransport] = []

    def make(**options: object) -> RedisStreamsTransport:
        options.setdefault("lease_s", 1.0)
        transport = RedisStreamsTransport(url=redis_url, stream=stream_name, **options)  # type: ignore[arg-type]
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()
