"""The C ring against a collections.deque model, one state machine per overflow policy.

Each machine starts the ring's 64-bit positions at 0, just below 2^32 or just
below 2^64, so that runs cross both boundaries, and checks after every step that
the contents, length, counters and handed-back items match the model exactly.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from taskorbit.worker.ring import Overflow, Ring

STARTS = [0, 2**32 - 8, 2**64 - 8]
BATCHES = st.lists(st.integers(), max_size=12)


class RingModel(RuleBasedStateMachine):
    policy: Overflow = Overflow.BLOCK

    def __init__(self) -> None:
        super().__init__()
        self.ring: Ring[int] = Ring(1)
        self.model: deque[int] = deque()
        self.capacity = 1
        self.counters = {"enqueued": 0, "dequeued": 0, "dropped": 0, "rejected": 0}
        self.high_water = 0

    @initialize(
        capacity=st.integers(min_value=1, max_value=9),
        start=st.sampled_from(STARTS),
        offset=st.integers(min_value=0, max_value=12),
    )
    def create(self, capacity: int, start: int, offset: int) -> None:
        self.ring = Ring._starting_at(capacity, (start + offset) % 2**64, overflow=self.policy)
        self.capacity = self.ring.capacity
        assert self.capacity >= capacity and self.capacity & (self.capacity - 1) == 0

    def expect_put(self, items: list[int]) -> list[int]:
        """Apply a put to the model; return what the ring must hand back."""
        room = self.capacity - len(self.model)
        if self.policy is Overflow.DROP_OLDEST:
            skipped = items[: max(0, len(items) - self.capacity)]
            kept = items[len(skipped) :]
            evicted = [self.model.popleft() for _ in range(max(0, len(kept) - room))]
            handed_back = evicted + skipped
            self.counters["dropped"] += len(handed_back)
            self.counters["enqueued"] += len(kept)
            self.model.extend(kept)
        else:
            fits = len(items) <= room if self.policy is Overflow.REJECT else True
            stored = items[:room] if fits else []
            handed_back = items[len(stored) :]
            counter = "dropped" if self.policy is Overflow.DROP_NEWEST else "rejected"
            self.counters[counter] += len(handed_back)
            self.counters["enqueued"] += len(stored)
            self.model.extend(stored)
        self.high_water = max(self.high_water, len(self.model))
        return handed_back

    @rule(item=st.integers())
    def put(self, item: int) -> None:
        expected = self.expect_put([item])
        assert self.ring.put(item, timeout=0) == expected

    @rule(items=BATCHES)
    def put_many(self, items: list[int]) -> None:
        expected = self.expect_put(items)
        assert self.ring.put_many(items, timeout=0) == expected

    @rule(max_items=st.integers(min_value=1, max_value=12))
    def get_many(self, max_items: int) -> None:
        expected = [self.model.popleft() for _ in range(min(max_items, len(self.model)))]
        self.counters["dequeued"] += len(expected)
        assert self.ring.get_many(max_items, timeout=0) == expected

    @rule()
    def get(self) -> None:
        expected: Any = self.model.popleft() if self.model else None
        self.counters["dequeued"] += expected is not None
        assert self.ring.get(timeout=0) == expected

    @rule()
    def drain(self) -> None:
        expected = list(self.model)
        self.model.clear()
        self.counters["dequeued"] += len(expected)
        assert self.ring.drain() == expected

    @invariant()
    def length_matches(self) -> None:
        assert len(self.ring) == len(self.model)
        assert self.ring.free == self.capacity - len(self.model)
        assert self.ring._holding() == len(self.model)  # nothing leaks

    @invariant()
    def stats_match(self) -> None:
        stats = self.ring.stats()
        assert {name: getattr(stats, name) for name in self.counters} == self.counters
        assert stats.high_water == self.high_water
        assert stats.length == len(self.model)


def machine_for(policy: Overflow) -> type[RingModel]:
    return type(f"RingModel_{policy.name}", (RingModel,), {"policy": policy})


# About 2 s per policy on a quiet 2-core machine, 5 s on a loaded one.
_SETTINGS = settings(max_examples=80, stateful_step_count=40, deadline=None)

TestBlock = machine_for(Overflow.BLOCK).TestCase
TestDropNewest = machine_for(Overflow.DROP_NEWEST).TestCase
TestDropOldest = machine_for(Overflow.DROP_OLDEST).TestCase
TestReject = machine_for(Overflow.REJECT).TestCase
for _case in (TestBlock, TestDropNewest, TestDropOldest, TestReject):
    _case.settings = _SETTINGS

del _case
