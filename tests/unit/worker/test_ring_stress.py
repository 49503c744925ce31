"""Many producer and consumer threads on one ring: every item is accounted for once.

With BLOCK every item produced is delivered exactly once. With the dropping
policies every item is either delivered or handed back to its producer, never
both, never neither, and the ring's counters agree with what the threads saw.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

import pytest

from taskorbit.errors import RingClosed
from taskorbit.worker.ring import Overflow, Ring

PRODUCERS = 4
CONSUMERS = 3
PER_PRODUCER = 8000

Item = tuple[int, int]


def run_threads(targets: Sequence[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=t, name=f"stress-{i}") for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"


def pump(ring: Ring[Item]) -> tuple[Counter[Item], list[Item], list[Item]]:
    """Run producers and consumers to completion; return produced, delivered, handed back."""
    produced = Counter((pid, i) for pid in range(PRODUCERS) for i in range(PER_PRODUCER))
    delivered: list[Item] = []
    handed_back: list[Item] = []
    producers_done = threading.Barrier(PRODUCERS, action=ring.close)

    def produce(pid: int) -> None:
        items = [(pid, i) for i in range(PER_PRODUCER)]
        i, size = 0, 1
        while i < len(items):
            if size == 1:  # mix single puts and batches of varying size
                handed_back.extend(ring.put(items[i]))
            else:
                handed_back.extend(ring.put_many(items[i : i + size]))
            i += size
            size = size % 17 + 1
        producers_done.wait()  # the last producer to finish closes the ring

    def consume(max_items: int) -> None:
        while True:
            batch = ring.get_many(max_items, timeout=5)
            delivered.extend(batch)  # list.extend is atomic under the GIL
            if not batch and ring.closed and len(ring) == 0:
                return

    run_threads(
        [functools.partial(produce, p) for p in range(PRODUCERS)]
        + [functools.partial(consume, m) for m in (1, 7, 64)]
    )
    return produced, delivered, handed_back


def test_with_block_every_item_is_delivered_exactly_once() -> None:
    ring: Ring[Item] = Ring(32, overflow=Overflow.BLOCK)
    produced, delivered, handed_back = pump(ring)
    assert handed_back == []
    assert Counter(delivered) == produced
    stats = ring.stats()
    assert stats.enqueued == stats.dequeued == PRODUCERS * PER_PRODUCER
    assert stats.high_water <= ring.capacity
    assert ring._holding() == 0 and not ring._singles and not ring._batches


@pytest.mark.parametrize("policy", [Overflow.DROP_OLDEST, Overflow.DROP_NEWEST, Overflow.REJECT])
def test_with_a_dropping_policy_every_item_is_delivered_or_handed_back(policy: Overflow) -> None:
    ring: Ring[Item] = Ring(16, overflow=policy)
    produced, delivered, handed_back = pump(ring)
    assert Counter(delivered) + Counter(handed_back) == produced
    assert not set(delivered) & set(handed_back)
    stats = ring.stats()
    assert stats.dequeued == len(delivered)
    assert stats.dropped + stats.rejected == len(handed_back)
    assert ring._holding() == 0 and not ring._singles and not ring._batches


def test_close_wakes_every_blocked_consumer_and_producer() -> None:
    empty: Ring[int] = Ring(4)
    full: Ring[int] = Ring(1)
    full.put(0)
    outcomes: list[object] = []
    started = threading.Barrier(6 + 1)

    def consume() -> None:
        started.wait()
        outcomes.append(empty.get_many(8))

    def produce() -> None:
        started.wait()
        try:
            outcomes.append(full.put(1))
        except RingClosed as e:
            outcomes.append(e)

    threads = [threading.Thread(target=f) for f in [consume] * 3 + [produce] * 3]
    for thread in threads:
        thread.start()
    started.wait()
    time.sleep(0.05)  # let them reach their waits; the outcome is the same if they have not
    empty.close()
    full.close()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert outcomes.count([]) == 3  # consumers: closed and empty
    assert sum(isinstance(o, RingClosed) for o in outcomes) == 3  # producers
    assert full.get_many(4) == [0]  # the item stored before close is still delivered
