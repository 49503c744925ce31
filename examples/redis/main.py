"""Redis Streams: durable, at-least-once; a dead letter and its redrive.

    REDIS_URL=redis://localhost:6379/0 python examples/redis/main.py

Then the same from a shell: ``taskorbit worker main:app`` and
``taskorbit dlq list main:app`` (run in this directory with REDIS_URL set).
"""

from __future__ import annotations

import os
import sys
import threading

import taskorbit as orbit
from taskorbit.dlq import Selection, for_transport
from taskorbit.transports.redis_streams import RedisStreamsTransport


def say(line: str) -> None:
    """print() from handler threads, one write per line: print() writes the text
    and the newline separately, so concurrent lines could interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


transport = RedisStreamsTransport(
    os.environ.get("REDIS_URL", "redis://localhost:6379/0"), stream="example-orders"
)
app = orbit.Orbit(transport, poll_timeout=0.2)
allow_refunds = threading.Event()
handled = threading.Event()


@app.task("refund")
def refund(order_id: int) -> orbit.Result | None:
    if not allow_refunds.is_set():
        return orbit.dead_letter("refunds are paused")
    say(f"refunded order {order_id}")
    handled.set()
    return None


if __name__ == "__main__":
    refund.delay(42)
    dlq = for_transport(transport)
    with app:
        while not dlq.list(selection=Selection.of(topic="refund")):
            handled.wait(0.05)
    for letter in dlq.list():
        print(f"in the DLQ: {letter.topic} after {letter.attempts} attempt(s): {letter.reason}")
    allow_refunds.set()
    moved = dlq.redrive(Selection.of(topic="refund"))
    print(f"redrove {len(moved)}")
    with app:
        handled.wait(10)
    transport.close()
