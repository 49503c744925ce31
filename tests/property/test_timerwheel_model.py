"""The timer wheel against a heapq model: same items fired, in the same order.

Deadlines range from the past through the next tick to centuries ahead, the clock
moves by nothing, by less than a tick, across every level, and sometimes backwards,
and small wheel sizes make cascades and the far-future heap common.
"""

from __future__ import annotations

import heapq

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from taskorbit.worker.timerwheel import TimerWheel

# Offsets from "now", in seconds: past, within a tick, short, long, absurd.
offsets = st.one_of(
    st.floats(-100.0, 0.0),
    st.floats(0.0, 0.005),
    st.floats(0.0, 10.0),
    st.floats(10.0, 1e7),
    st.floats(1e7, 1e14),
    st.integers(-5, 50).map(float),  # exact tick boundaries collide often
)
steps = st.one_of(
    st.just(0.0),
    st.floats(0.0, 0.002),
    st.floats(0.0, 20.0),
    st.floats(0.0, 1e8),
    st.floats(1e8, 1e15),
    st.floats(-50.0, 0.0),  # a clock that goes backwards must not fire anything early
)


class TimerWheelMatchesHeap(RuleBasedStateMachine):
    @initialize(
        tick_s=st.sampled_from([0.001, 0.25, 1.0]),
        wheel_size=st.sampled_from([2, 3, 8, 512]),
        start=st.floats(-1e6, 1e6),
    )
    def make_wheel(self, tick_s: float, wheel_size: int, start: float) -> None:
        self.wheel: TimerWheel[int] = TimerWheel(
            lambda items: None, tick_s=tick_s, wheel_size=wheel_size
        )
        self.model: list[tuple[float, int]] = []
        self.now = start
        self.next_item = 0
        self.started = False

    @rule(offset=offsets)
    def schedule(self, offset: float) -> None:
        deadline = self.now + offset
        self.wheel.schedule(deadline, self.next_item)
        heapq.heappush(self.model, (deadline, self.next_item))
        self.next_item += 1

    @rule(offset=offsets, count=st.integers(2, 20))
    def schedule_many_at_one_deadline(self, offset: float, count: int) -> None:
        for _ in range(count):
            self.schedule(offset)

    @rule(step=steps)
    def advance(self, step: float) -> None:
        self.now += step
        fired = self.wheel.advance(self.now)
        expected = []
        while self.model and self.model[0][0] <= self.now:
            expected.append(heapq.heappop(self.model)[1])
        assert fired == expected

    @precondition(lambda self: self.model)
    @rule()
    def advance_to_the_next_deadline(self) -> None:
        self.advance(self.model[0][0] - self.now)

    @invariant()
    def pending_items_match(self) -> None:
        assert len(self.wheel) == len(self.model)

    @invariant()
    def next_deadline_matches(self) -> None:
        assert self.wheel.next_deadline() == (self.model[0][0] if self.model else None)

    def teardown(self) -> None:
        if hasattr(self, "wheel"):
            assert self.wheel.stop() == [item for _, item in sorted(self.model)]


TimerWheelMatchesHeap.TestCase.settings = settings(max_examples=300, stateful_step_count=60)
test_timer_wheel_fires_what_a_heap_would = TimerWheelMatchesHeap.TestCase
