"""The hierarchical timer wheel (taskorbit.worker.timerwheel).

Most tests drive advance() with explicit times; the threaded ones at the end run the
owner thread on the real clock and wait on events or conditions, and sleep only where
letting time pass is what the test shows (an idle wheel does nothing meanwhile).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time

import pytest

from taskorbit.errors import ConfigurationError, TimerWheelStopped
from taskorbit.worker.timerwheel import TimerWheel
from tests.waiting import wait_for

HOUR = 3600.0


def make_wheel(**kwargs: object) -> TimerWheel[str]:
    return TimerWheel(lambda items: None, **kwargs)  # type: ignore[arg-type]


# -- advance(): the pure step ------------------------------------------------------


def test_advance_returns_due_items_in_deadline_order() -> None:
    wheel = make_wheel()
    wheel.advance(100.0)
    wheel.schedule(100.030, "c")
    wheel.schedule(100.010, "a")
    wheel.schedule(100.020, "b")
    wheel.schedule(100.500, "later")
    assert wheel.advance(100.030) == ["a", "b", "c"]
    assert len(wheel) == 1


def test_an_item_never_fires_before_its_deadline_even_within_a_tick() -> None:
    wheel = make_wheel(tick_s=0.001)
    wheel.advance(10.0)
    wheel.schedule(10.0057, "x")
    assert wheel.advance(10.0056) == []
    assert wheel.advance(10.00569) == []
    assert wheel.advance(10.0057) == ["x"]


def test_items_with_equal_deadlines_fire_in_the_order_they_were_scheduled() -> None:
    wheel = make_wheel()
    for name in "abcdef":
        wheel.schedule(5.0, name)
    assert wheel.advance(5.0) == list("abcdef")


def test_an_item_already_due_fires_at_the_next_step() -> None:
    wheel = make_wheel()
    wheel.advance(50.0)
    wheel.schedule(10.0, "overdue")
    wheel.schedule(50.0, "exactly-now")
    assert wheel.advance(50.0) == ["overdue", "exactly-now"]


def test_schedule_before_the_first_advance_is_kept() -> None:
    wheel = make_wheel()
    wheel.schedule(3.0, "early")
    assert wheel.advance(2.0) == []
    assert wheel.advance(3.5) == ["early"]


def test_items_hours_away_cascade_down_and_fire_on_time() -> None:
    wheel = make_wheel()
    wheel.advance(0.0)
    deadlines = {"ms": 0.004, "s": 1.5, "min": 240.0, "hour": HOUR, "day": 30 * HOUR}
    for name, deadline in deadlines.items():
        wheel.schedule(deadline, name)
    fired: list[str] = []
    # Walk the clock in uneven steps, checking nothing fires early or is skipped.
    now = 0.0
    steps = random.Random(5)
    while len(fired) < len(deadlines):
        now += steps.choice([0.0007, 0.3, 17.0, 900.0])
        for name in wheel.advance(now):
            assert deadlines[name] <= now
            fired.append(name)
    assert fired == ["ms", "s", "min", "hour", "day"]


def test_a_clock_jump_of_years_fires_everything_due_in_one_step() -> None:
    wheel = make_wheel()
    wheel.advance(0.0)
    deadlines = [random.Random(i).uniform(0, 5 * 365 * 24 * HOUR) for i in range(500)]
    for i, deadline in enumerate(deadlines):
        wheel.schedule(deadline, str(i))
    fired = wheel.advance(6 * 365 * 24 * HOUR)
    assert fired == [str(i) for i in sorted(range(500), key=deadlines.__getitem__)]
    assert len(wheel) == 0


def test_absurdly_far_deadlines_wait_and_still_fire() -> None:
    wheel = make_wheel(wheel_size=4)
    wheel.advance(0.0)
    wheel.schedule(1e12, "far")
    wheel.schedule(2.0, "near")
    assert wheel.advance(1e11) == ["near"]
    assert wheel.next_deadline() == 1e12
    assert wheel.advance(1e12) == ["far"]


def test_moving_time_backwards_fires_nothing_new() -> None:
    wheel = make_wheel()
    wheel.advance(100.0)
    wheel.schedule(99.0, "past")
    wheel.schedule(101.0, "future")
    assert wheel.advance(98.0) == []
    assert wheel.advance(100.0) == ["past"]
    assert wheel.advance(101.0) == ["future"]


def test_len_and_next_deadline_track_pending_items() -> None:
    wheel = make_wheel()
    assert len(wheel) == 0
    assert wheel.next_deadline() is None
    wheel.schedule(7.5, "a")
    wheel.schedule(HOUR, "b")
    assert len(wheel) == 2
    assert wheel.next_deadline() == 7.5
    wheel.advance(0.0)
    assert wheel.next_deadline() == 7.5
    wheel.advance(8.0)
    assert len(wheel) == 1
    assert wheel.next_deadline() == HOUR


def test_next_deadline_is_exact_for_items_in_higher_levels() -> None:
    wheel = make_wheel(wheel_size=8)
    wheel.advance(0.0)
    wheel.schedule(123.4567, "x")
    wheel.schedule(123.4566, "y")
    assert wheel.next_deadline() == 123.4566


def test_stop_returns_unfired_items_in_deadline_order_and_refuses_more() -> None:
    wheel = make_wheel()
    wheel.advance(0.0)
    wheel.schedule(HOUR, "hour")
    wheel.schedule(0.5, "half-second")
    wheel.advance(0.1)
    wheel.schedule(0.2, "handed-over-not-yet-taken-in")
    assert wheel.stop() == ["handed-over-not-yet-taken-in", "half-second", "hour"]
    assert len(wheel) == 0
    with pytest.raises(TimerWheelStopped):
        wheel.schedule(1.0, "late")
    with pytest.raises(TimerWheelStopped):
        wheel.start()
    assert wheel.stop() == []


@pytest.mark.parametrize("deadline", [float("nan"), float("inf"), float("-inf")])
def test_a_deadline_that_is_not_a_finite_time_is_refused(deadline: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        make_wheel().schedule(deadline, "x")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tick_s": 0}, "tick_s must be"),
        ({"tick_s": float("nan")}, "tick_s must be"),
        ({"wheel_size": 1}, "wheel_size must be"),
        ({"wheel_size": 8.0}, "wheel_size must be"),
    ],
)
def test_bad_wheel_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_wheel(**kwargs)


# -- the owner thread ----------------------------------------------------------------


class Recorder:
    """An on_due that records when each item fired and signals once all did."""

    def __init__(self, expected: int) -> None:
        self.fired: list[tuple[str, float]] = []
        self.expected = expected
        self.all_fired = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, items: list[str]) -> None:
        now = time.monotonic()
        with self.lock:
            self.fired.extend((item, now) for item in items)
            if len(self.fired) >= self.expected:
                self.all_fired.set()


def test_real_timers_fire_in_deadline_order_and_never_early() -> None:
    recorder = Recorder(expected=200)
    wheel: TimerWheel[str] = TimerWheel(recorder)
    wheel.start()
    try:
        start = time.monotonic()
        rng = random.Random(3)
        deadlines = {str(i): start + rng.uniform(0.0, 0.3) for i in range(200)}
        for item, deadline in deadlines.items():
            wheel.schedule(deadline, item)
        assert recorder.all_fired.wait(10.0), f"only {len(recorder.fired)} of 200 fired"
    finally:
        wheel.stop()
    assert [item for item, _ in recorder.fired] == sorted(deadlines, key=deadlines.__getitem__)
    for item, fired_at in recorder.fired:
        assert fired_at >= deadlines[item]


def test_timers_handed_over_from_many_threads_all_fire_exactly_once() -> None:
    recorder = Recorder(expected=8 * 250)
    wheel: TimerWheel[str] = TimerWheel(recorder)
    wheel.start()

    def producer(n: int) -> None:
        rng = random.Random(n)
        for i in range(250):
            wheel.schedule(time.monotonic() + rng.uniform(-0.01, 0.05), f"{n}-{i}")

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert recorder.all_fired.wait(10.0), f"only {len(recorder.fired)} fired"
    finally:
        left = wheel.stop()
    names = [item for item, _ in recorder.fired]
    assert sorted(names) == sorted(f"{n}-{i}" for n in range(8) for i in range(250))
    assert left == []


def test_an_earlier_timer_wakes_a_thread_sleeping_for_a_later_one() -> None:
    recorder = Recorder(expected=1)
    wheel: TimerWheel[str] = TimerWheel(recorder)
    wheel.start()
    try:
        wheel.schedule(time.monotonic() + HOUR, "in-an-hour")
        wait_for(
            lambda: (wheel._sleeping_until or 0.0) > time.monotonic() + HOUR / 2,
            10.0,
            "the owner thread to sleep with its alarm set an hour ahead",
            poll_s=0.001,
        )
        wheel.schedule(time.monotonic() + 0.01, "soon")
        assert recorder.all_fired.wait(10.0)
    finally:
        left = wheel.stop()
    assert [item for item, _ in recorder.fired] == ["soon"]
    assert left == ["in-an-hour"]


def test_stop_hands_back_exactly_the_items_that_did_not_fire() -> None:
    first_batch = threading.Event()
    fired: list[int] = []

    def on_due(items: list[int]) -> None:
        fired.extend(items)
        first_batch.set()

    wheel: TimerWheel[int] = TimerWheel(on_due)
    now = time.monotonic()
    for i in range(2000):
        wheel.schedule(now + i * 0.0005, i)  # one every half millisecond, for a second
    wheel.start()
    assert first_batch.wait(10.0)
    left = wheel.stop()
    assert fired + left == list(range(2000))
    assert left, "stop() came too late to leave anything pending"


def test_an_on_due_that_raises_is_logged_and_the_wheel_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    delivered: list[str] = []
    done = threading.Event()

    def on_due(items: list[str]) -> None:
        if "boom" in items:
            raise RuntimeError("handler of due timers failed")
        delivered.extend(items)
        done.set()

    wheel: TimerWheel[str] = TimerWheel(on_due, name="test-timer")
    with caplog.at_level(logging.ERROR, logger="taskorbit.worker.timerwheel"):
        wheel.start()
        try:
            now = time.monotonic()
            wheel.schedule(now, "boom")
            wheel.schedule(now + 0.05, "after")
            assert done.wait(10.0)
        finally:
            wheel.stop()
    assert delivered == ["after"]
    failures = [r for r in caplog.records if "on_due failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert failures[0].exc_info[0] is RuntimeError


def test_the_owner_thread_carries_the_wheel_name_and_does_not_keep_the_process_alive() -> None:
    wheel = make_wheel(name="taskorbit-timer-test")
    wheel.start()
    try:
        threads = [t for t in threading.enumerate() if t.name == "taskorbit-timer-test"]
        assert len(threads) == 1
        assert threads[0].daemon
        with pytest.raises(RuntimeError, match="already started"):
            wheel.start()
    finally:
        wheel.stop()
    assert not any(t.name == "taskorbit-timer-test" for t in threading.enumerate())


def test_an_idle_wheel_sleeps_instead_of_polling_the_clock() -> None:
    calls = 0

    def counting_clock() -> float:
        nonlocal calls
        calls += 1
        return time.monotonic()

    wheel = make_wheel(clock=counting_clock)
    wheel.start()
    try:
        wait_for(lambda: wheel._sleeping_until == math.inf, 10.0, "the idle wheel to sleep")
        asleep_after = calls
        # Letting time pass is the point: a busy loop would call the clock thousands of
        # times here; a sleeping wheel not once.
        time.sleep(0.2)
        assert calls == asleep_after
    finally:
        wheel.stop()
