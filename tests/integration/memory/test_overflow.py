"""Overflow policies at the worker: what the ring refuses is reported and handed back."""

from __future__ import annotations

import threading

import pytest

import taskorbit as orbit
from tests.waiting import wait_for


class PushingMemoryTransport(orbit.MemoryTransport):
    """A memory broker that, like Redis Pub/Sub, delivers whether or not there is room."""

    push = True


class DropRecorder(orbit.Hooks):
    def __init__(self) -> None:
        self.dropped: list[str] = []

    def on_drop(self, message: orbit.Message, reason: str) -> None:
        self.dropped.append(reason)


@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest", "reject"])
def test_a_full_ring_reports_drops_and_hands_them_back_so_nothing_is_lost(overflow: str) -> None:
    transport = PushingMemoryTransport()
    recorder = DropRecorder()
    app = orbit.Orbit(
        transport,
        concurrency=1,
        buffer_size=4,
        overflow=overflow,
        hooks=[recorder],
        ack_interval_s=0.01,
    )
    gate = threading.Event()
    done: list[int] = []

    def work(n: int) -> None:
        gate.wait(10)
        done.append(n)

    # Every hand-back is a delivery the broker counts, and a 200-message burst into
    # four slots hands some messages back many times: allow for it.
    app.handle("w", work, max_retries=10_000)
    with app:
        app.publish_many("w", list(range(200)))
        # With one worker blocked and four slots, most of a 200-message burst cannot fit.
        wait_for(lambda: recorder.dropped, 10.0, "the ring to drop a message")
        gate.set()
        assert transport.wait_idle(30)
    assert sorted(done) == list(range(200))
    # How many drops there are depends on how the receive loop and the one handler
    # interleave, so only their agreement is exact; there was at least one.
    assert app.stats()["dropped"] == len(recorder.dropped) > 0
    assert all(f"overflow={overflow}" in reason for reason in recorder.dropped)


def test_block_overflow_never_drops() -> None:
    transport = PushingMemoryTransport()
    recorder = DropRecorder()
    app = orbit.Orbit(
        transport, concurrency=2, buffer_size=4, hooks=[recorder], ack_interval_s=0.01
    )
    done: list[int] = []
    app.handle("w", done.append)
    with app:
        app.publish_many("w", list(range(500)))
        assert transport.wait_idle(30)
    assert sorted(done) == list(range(500))
    assert recorder.dropped == []
