"""Idempotency: the same key published three times runs the handler once.

The key comes from the payload (``idempotency_key=`` on the task) or is given per
call (``delay(..., idempotency_key=...)``); the store claims it atomically before
the handler runs. ``MemoryStore`` is per process; use ``RedisStore`` across workers.

    python examples/idempotent/main.py
"""

from __future__ import annotations

import sys

import msgspec

import taskorbit as orbit


def say(line: str) -> None:
    """print() from handler threads, one write per line: print() writes the text
    and the newline separately, so concurrent lines could interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Charge(msgspec.Struct):
    order_id: str
    cents: int


transport = orbit.MemoryTransport()
# A duplicate that arrives while the first copy still runs is put back for
# duplicate_delay_s (5 s by default); shortened here so the demo ends quickly.
app = orbit.Orbit(transport, idempotency_store=orbit.MemoryStore(), duplicate_delay_s=0.1)
charged: list[str] = []


@app.task("charge", idempotency_key=lambda c: f"charge-{c.order_id}")
def charge(c: Charge) -> None:
    charged.append(c.order_id)
    say(f"charged order {c.order_id}: {c.cents} cents")


if __name__ == "__main__":
    for _ in range(3):  # a client retrying its request
        charge.delay(Charge(order_id="42", cents=1999))
    charge.delay(Charge(order_id="43", cents=500))
    with app:
        transport.wait_idle(10)
    print(f"charges made: {len(charged)} for 4 publishes (orders {sorted(charged)})")
