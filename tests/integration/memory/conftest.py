from __future__ import annotations

from collections.abc import Iterator

import pytest

import taskorbit as orbit


@pytest.fixture
def transport() -> orbit.MemoryTransport:
    return orbit.MemoryTransport()


@pytest.fixture
def app(transport: orbit.MemoryTransport) -> Iterator[orbit.Orbit]:
    app = orbit.Orbit(transport, concurrency=8, buffer_size=64, ack_interval_s=0.01)
    yield app
    app.stop(timeout=5.0)
