"""A hierarchical timing wheel for delayed retries and ETA tasks.

One owner thread runs the wheel; other threads only hand timers over
(:meth:`TimerWheel.schedule` appends to a list under a short lock), so a slow
cascade never blocks a worker that is scheduling a retry.

The layout follows Kafka's ``TimingWheel``. Time is cut into ticks (1 ms by
default). Level 0 has ``wheel_size`` buckets of one tick each; every further level
has ``wheel_size`` buckets each as wide as the whole level below. A timer goes into
the lowest level whose span still reaches its deadline; when the wheel's time
reaches the start of a higher-level bucket, its timers cascade into lower levels,
and a level-0 bucket hands its timers to a small heap from which they fire in
exact deadline order. With the defaults (tick 1 ms, 512 buckets):

=====  ===================  ========================
level  one bucket spans     the whole level spans
=====  ===================  ========================
0      1 ms                 512 ms
1      512 ms               262 s (4.4 min)
2      262 s (4.4 min)      134,218 s (37.3 h)
3      37.3 h               795 days
4+     795 days             ...
=====  ===================  ========================

Inserting is O(1) (plus O(levels) to pick the level); each timer cascades at most
once per level. Only non-empty buckets sit in a heap ordered by their start, so
the owner thread sleeps straight to the next one instead of ticking through empty
milliseconds, and a clock that jumps forward by hours costs nothing extra.
Timers beyond ``_MAX_LEVELS`` levels (centuries at the defaults) wait in a plain
heap until they come within range.

A timer fires no earlier than its deadline: :meth:`TimerWheel.advance` compares
exact deadlines, the buckets only decide when to look.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from taskorbit.errors import ConfigurationError, TimerWheelStopped

T = TypeVar("T")

logger = logging.getLogger("taskorbit.worker.timerwheel")

# Levels above this many hold so far into the future (512**8 ms is beyond any
# realistic delay) that their timers are kept in a heap instead.
_MAX_LEVELS = 8

# (deadline, sequence, tick, item): the sequence number is unique, so tuples never
# compare items, and equal deadlines fire in the order they were scheduled.
_Entry = tuple[float, int, int, T]


class _Bucket(Generic[T]):
    __slots__ = ("entries", "min_deadline", "virtual_id")

    def __init__(self) -> None:
        self.entries: list[_Entry[T]] = []
        self.virtual_id = 0  # which span of ticks the bucket holds right now
        self.min_deadline = math.inf


class TimerWheel(Generic[T]):
    """Calls ``on_due(items)`` from its own thread once the items' deadlines pass.

    ``on_due`` receives the due items in deadline order. It runs on the owner
    thread, so it must not block for long (hand items to the ring and return); an
    exception from it is logged and the wheel carries on. :meth:`stop` waits for a
    running ``on_due`` call to return.

    Deadlines are in ``clock()`` units (``time.monotonic()`` seconds by default).
    Tests drive :meth:`advance` with a fake clock and never start the thread; the
    thread itself sleeps in real seconds, so it needs a real clock.
    """

    def __init__(
        self,
        on_due: Callable[[list[T]], None],
        *,
        tick_s: float = 0.001,
        wheel_size: int = 512,
        clock: Callable[[], float] = time.monotonic,
        name: str = "taskorbit-timer",
    ) -> None:
        if not (isinstance(tick_s, (int, float)) and math.isfinite(tick_s) and tick_s > 0):
            raise ConfigurationError(f"tick_s must be a number of seconds > 0, got {tick_s!r}")
        if isinstance(wheel_size, bool) or not isinstance(wheel_size, int) or wheel_size < 2:
            raise ConfigurationError(f"wheel_size must be a whole number >= 2, got {wheel_size!r}")
        self._on_due = on_due
        self._tick_s = float(tick_s)
        self._wheel_size = wheel_size
        self._clock = clock
        self._name = name
        self._thread: threading.Thread | None = None

        # Hand-over state, guarded by self._handover.
        self._handover = threading.Condition(threading.Lock())
        self._incoming: list[_Entry[T]] = []
        self._sequence = itertools.count()
        self._stopped = False
        # When the owner thread sleeps: the time it will wake (inf: until notified).
        # None while it is awake; it looks at self._incoming before sleeping again.
        self._sleeping_until: float | None = None

        # Wheel state, guarded by self._wheel_lock.
        self._wheel_lock = threading.Lock()
        self._tick: int | None = None  # the wheel's current time in ticks; None before advance
        self._due_soon: list[_Entry[T]] = []  # heap of timers whose tick has been reached
        self._levels: list[list[_Bucket[T]]] = []
        # Heap of non-empty buckets: (start tick, -level, slot). For equal starts the
        # highest level comes first, so a cascade is never late behind level 0.
        self._buckets: list[tuple[int, int, int]] = []
        self._far: list[_Entry[T]] = []  # heap of timers beyond the top level
        self._pending = 0  # timers in the wheel state (not counting self._incoming)

    # -- any thread -------------------------------------------------------------

    def schedule(self, deadline: float, item: T) -> None:
        """Fire ``item`` once ``clock()`` reaches ``deadline``. Safe from any thread.

        A deadline already past fires at the owner thread's next step.
        """
        if not math.isfinite(deadline):
            raise ValueError(f"deadline must be a finite time, got {deadline!r}")
        tick = math.floor(deadline / self._tick_s)
        with self._handover:
            if self._stopped:
                raise TimerWheelStopped(f"timer wheel {self._name!r} is stopped")
            self._incoming.append((deadline, next(self._sequence), tick, item))
            # Wake the owner only when this timer is earlier than its alarm.
            if self._sleeping_until is not None and deadline < self._sleeping_until:
                self._handover.notify()

    def __len__(self) -> int:
        """Timers scheduled and not yet fired (nor handed back by :meth:`stop`)."""
        with self._wheel_lock, self._handover:
            return self._pending + len(self._incoming)

    def next_deadline(self) -> float | None:
        """The earliest pending deadline, or None when nothing is pending."""
        with self._wheel_lock:
            candidates = [
                self._levels[-neg_level][slot].min_deadline for _, neg_level, slot in self._buckets
            ]
            for heap in (self._due_soon, self._far):
                if heap:
                    candidates.append(heap[0][0])
            with self._handover:
                candidates.extend(entry[0] for entry in self._incoming)
        return min(candidates, default=None)

    # -- the owner thread (or a test) ------------------------------------------

    def advance(self, now: float) -> list[T]:
        """Take in handed-over timers and return every item due at ``now``.

        Items come back in deadline order (equal deadlines in scheduling order);
        ``on_due`` is not called. Moving ``now`` backwards fires nothing new.
        """
        with self._handover:
            incoming, self._incoming = self._incoming, []
        with self._wheel_lock:
            self._pending += len(incoming)
            target = math.floor(now / self._tick_s)
            if self._tick is None:
                self._tick = target
            self._cascade_until(target)
            self._tick = max(self._tick, target)
            while self._far and self._fits_levels(self._far[0][2]):
                self._place(heapq.heappop(self._far))
            for entry in incoming:
                self._place(entry)
            due: list[T] = []
            while self._due_soon and self._due_soon[0][0] <= now:
                due.append(heapq.heappop(self._due_soon)[3])
            self._pending -= len(due)
            return due

    def start(self) -> None:
        """Start the owner thread (a daemon named after the wheel)."""
        with self._handover:
            if self._stopped:
                raise TimerWheelStopped(f"timer wheel {self._name!r} is stopped")
            if self._thread is not None:
                raise RuntimeError(f"timer wheel {self._name!r} is already started")
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> list[T]:
        """Stop the owner thread and return every timer that has not fired.

        The items come back in deadline order, so shutdown can return them to the
        broker. Afterwards :meth:`schedule` raises :class:`TimerWheelStopped`.
        """
        with self._handover:
            self._stopped = True
            self._handover.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._wheel_lock, self._handover:
            left = self._incoming + self._due_soon + self._far
            for _, neg_level, slot in self._buckets:
                left.extend(self._levels[-neg_level][slot].entries)
            self._incoming, self._due_soon, self._far, self._buckets = [], [], [], []
            self._levels = []
            self._pending = 0
        left.sort()
        return [entry[3] for entry in left]

    # -- wheel internals, called with self._wheel_lock held ---------------------

    def _cascade_until(self, target: int) -> None:
        """Empty every bucket that starts at or before tick ``target``.

        The wheel's time walks from bucket to bucket in start order (as Kafka's
        does) rather than jumping to ``target``: a timer re-placed from a bucket
        then never lands in a slot still held by an older, unprocessed bucket.
        """
        assert self._tick is not None
        while self._buckets and self._buckets[0][0] <= target:
            start, neg_level, slot = heapq.heappop(self._buckets)
            self._tick = max(self._tick, start)
            bucket = self._levels[-neg_level][slot]
            entries, bucket.entries, bucket.min_deadline = bucket.entries, [], math.inf
            for entry in entries:
                self._place(entry)

    def _place(self, entry: _Entry[T]) -> None:
        """Put a timer where it belongs at the wheel's current time."""
        tick = entry[2]
        current = self._tick
        assert current is not None
        if tick <= current:
            heapq.heappush(self._due_soon, entry)
            return
        unit = 1  # ticks per bucket at this level
        for level in range(_MAX_LEVELS):
            span = unit * self._wheel_size
            level_start = current - current % unit
            if tick < level_start + span:
                self._add_to_bucket(level, tick // unit, unit, entry)
                return
            unit = span
        heapq.heappush(self._far, entry)

    def _add_to_bucket(self, level: int, virtual_id: int, unit: int, entry: _Entry[T]) -> None:
        while len(self._levels) <= level:
            self._levels.append([_Bucket() for _ in range(self._wheel_size)])
        slot = virtual_id % self._wheel_size
        bucket = self._levels[level][slot]
        if not bucket.entries:
            bucket.virtual_id = virtual_id
            heapq.heappush(self._buckets, (virtual_id * unit, -level, slot))
        # Placement only uses the next wheel_size - 1 spans of a level, and buckets
        # are emptied in start order, so a slot never holds two spans at once.
        assert bucket.virtual_id == virtual_id, "timer wheel slot reused before it was emptied"
        bucket.entries.append(entry)
        bucket.min_deadline = min(bucket.min_deadline, entry[0])

    def _fits_levels(self, tick: int) -> bool:
        current = self._tick
        assert current is not None
        top_unit: int = self._wheel_size ** (_MAX_LEVELS - 1)
        return tick < current - current % top_unit + top_unit * self._wheel_size

    def _wake_time(self) -> float | None:
        """When the owner thread next has work: a deadline, or a cascade to run."""
        with self._wheel_lock:
            times = []
            if self._due_soon:
                times.append(self._due_soon[0][0])
            if self._far:
                times.append(self._far[0][0])
            if self._buckets:
                start, neg_level, slot = self._buckets[0]
                # A level-0 bucket at the front holds the earliest bucketed timers
                # (ties sort higher levels first), so sleep to its exact deadline;
                # a higher bucket needs its cascade when its span starts.
                if neg_level == 0:
                    times.append(self._levels[0][slot].min_deadline)
                else:
                    times.append(start * self._tick_s)
        return min(times, default=None)

    # -- the owner thread --------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                due = self.advance(self._clock())
                if due:
                    self._deliver(due)
                if not self._sleep_until_work():
                    return
            except Exception:
                # A bug in the loop itself: log it, pause briefly, keep the wheel alive.
                logger.exception("timer wheel %r: loop step failed; continuing", self._name)
                with self._handover:
                    if self._stopped:
                        return
                    self._handover.wait(0.1)

    def _deliver(self, due: list[T]) -> None:
        try:
            self._on_due(due)
        except Exception:
            logger.exception("timer wheel %r: on_due failed for %d items", self._name, len(due))

    def _sleep_until_work(self) -> bool:
        """Sleep until the next timer, an earlier hand-over, or stop(). False on stop."""
        wake_at = self._wake_time()
        with self._handover:
            if self._stopped:
                return False
            if self._incoming:
                return True  # handed over while we were advancing
            timeout = None if wake_at is None else wake_at - self._clock()
            if timeout is not None and timeout <= 0:
                return True
            self._sleeping_until = math.inf if wake_at is None else wake_at
            try:
                self._handover.wait(timeout)
            finally:
                self._sleeping_until = None
            return not self._stopped
