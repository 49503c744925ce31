"""The settlement state machine (tests/settlement_machine.py) against a real
redis-server: Redis Streams with its retry streams, delayed sets and DLQ stream."""

from __future__ import annotations

import uuid

import pytest
import redis

import taskorbit as orbit
from taskorbit.transports.redis.streams import RedisStreamsTransport
from tests.settlement_machine import Backend, run_machine

pytestmark = pytest.mark.integration


def test_the_worker_settles_every_message_exactly_once_on_redis_streams(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)

    def make_transport(ordered: bool) -> orbit.Transport:
        transport = RedisStreamsTransport(
            redis_url, stream=f"machine-{uuid.uuid4().hex[:8]}", lease_s=2.0
        )
        transport.ordered = ordered
        return transport

    def write_broken(transport: orbit.Transport) -> None:
        assert isinstance(transport, RedisStreamsTransport)
        raw.xadd(transport.stream, {"foo": "bar"})  # no topic, no body

    try:
        run_machine(
            Backend(
                name="redis",
                make_transport=make_transport,
                write_broken=write_broken,
                examples=10,
                drain_timeout_s=20.0,
            )
        )
    finally:
        raw.close()
