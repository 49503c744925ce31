"""The transport a test run puts in place of the app's own: a queue on a clock the
test controls.

It is a :class:`~taskorbit.transports.base.Transport`, so ``Orbit.publish`` and the
worker's :class:`~taskorbit.worker.settle.Settler` talk to it as to any broker; but
nothing receives from it. The test run pops due messages itself
(:meth:`TestTransport.pop_due`), on the calling thread, so no thread and no real
wait is involved.

Time. ``Orbit.message`` turns ``countdown=``/``eta=`` into a wall-clock not-before
with ``time.time()``. :meth:`TestTransport.publish` turns that back into "so many
seconds from now" and places it on the run's clock, which stands still unless the
test moves it. A retry's delay (``nack(delay=)``) is placed the same way. So
``countdown=30`` runs after ``run.advance(30)``, however long the test itself took.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence

import msgspec

from taskorbit.errors import TransportError
from taskorbit.message import DLQ_ATTEMPTS_ATTR, DLQ_REASON_ATTR, DLQ_TIME_ATTR, Message
from taskorbit.testing.report import Fate
from taskorbit.transports.base import AckFailure, Transport

# (due on the run's clock, sequence, message): the sequence is unique, so entries
# never compare messages, and equal due times come out in the order queued.
_Entry = tuple[float, int, Message]


class TestTransport(Transport):
    """Holds what a test run has queued; see the module docstring."""

    __test__ = False  # not a pytest test class, whatever its name says

    name = "test"
    durable = False
    max_batch = 1

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        ordered: bool = False,
        on_publish: Callable[[], None] | None = None,
    ) -> None:
        #: Deliver like the app's own transport when that one is ordered (SQS FIFO,
        #: Pub/Sub ordering keys, ``MemoryTransport(ordered=True)``): a key's messages
        #: come out in publish order, and while one of them waits (a retry, an ETA)
        #: the others of its key wait behind it.
        self.ordered = ordered
        self._clock = clock
        self._on_publish = on_publish
        self._lock = threading.Lock()
        self._queue: list[_Entry] = []  # a heap; guarded by self._lock
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self.dead_letters: list[Message] = []  # guarded by self._lock
        self.published = 0

    # -- what the app and the settler call -------------------------------------------

    def publish(self, messages: Sequence[Message]) -> list[str]:
        now = self._clock()
        wall = time.time()
        ids: list[str] = []
        with self._lock:
            for m in messages:
                m.id = f"test-{next(self._ids)}"
                m.attempt = 1
                ids.append(m.id)
                due = now
                if m.not_before is not None and math.isfinite(m.not_before):
                    # To the millisecond (the timer wheel's tick), so that the few
                    # microseconds between Orbit.message and here do not turn a
                    # countdown of 30 s into 29.999997.
                    due = now + max(0.0, round(m.not_before - wall, 3))
                    m.not_before = None
                # A not-before of inf or nan is kept: the run dead-letters it on
                # delivery, as the dispatcher does ("not a point in time").
                heapq.heappush(self._queue, (due, next(self._seq), m))
            self.published += len(ids)
        if self._on_publish is not None:
            self._on_publish()
        return ids

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        raise TransportError(
            "an app inside a TestRun is run by run.drain() / run.advance(), not by a "
            "worker; leave the TestRun before app.start()"
        )

    def ack(self, messages: Sequence[Message]) -> list[AckFailure]:
        return []  # a delivered message left the queue when it was popped

    def nack(self, messages: Sequence[Message], delay: float = 0.0) -> None:
        due = self._clock() + delay
        with self._lock:
            for m in messages:
                heapq.heappush(self._queue, (due, next(self._seq), m))

    def dead_letter(self, message: Message, reason: str) -> None:
        attributes = {
            **message.attributes,
            DLQ_REASON_ATTR: reason,
            DLQ_ATTEMPTS_ATTR: str(message.attempt),
            DLQ_TIME_ATTR: f"{self._clock():.3f}",
        }
        with self._lock:
            self.dead_letters.append(msgspec.structs.replace(message, attributes=attributes))

    # -- what the test run calls -------------------------------------------------------

    def pop_due(self, until: float) -> tuple[float, Message] | None:
        """The next message due at or before ``until``, taken off the queue, with
        its due time; None when nothing is due by then."""
        with self._lock:
            index = self._next_index()
            if index is None or self._queue[index][0] > until:
                return None
            if index == 0:  # the heap's root: always so when not ordered
                due, _, message = heapq.heappop(self._queue)
            else:  # ordered: O(queue) per message, which suits a test double
                due, _, message = self._queue[index]
                self._queue[index] = self._queue[-1]
                self._queue.pop()
                heapq.heapify(self._queue)
            return due, message

    def has_due(self, until: float) -> bool:
        """Whether :meth:`pop_due` would return a message."""
        with self._lock:
            index = self._next_index()
            return index is not None and self._queue[index][0] <= until

    def fate_of(self, message: Message) -> Fate:
        """Where a settled ``message`` went: queued again (a retry or a deferral),
        to the dead letters, or neither (acked)."""
        with self._lock:
            if any(m is message for _, _, m in self._queue):
                return Fate.RETRIED
            if any(m.id == message.id for m in self.dead_letters):
                return Fate.DEAD_LETTERED
        return Fate.ACKED

    def entries(self) -> list[tuple[float, Message]]:
        """Everything queued, by due time (then by the order it was queued)."""
        with self._lock:
            return [(due, m) for due, _, m in sorted(self._queue, key=_entry_order)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)

    def _next_index(self) -> int | None:
        """Index of the entry to deliver next. Called with self._lock held."""
        if not self._queue:
            return None
        if not self.ordered:
            return 0  # the heap's root
        first_of_key: dict[str, int] = {}  # ordering key -> index of its first-published
        for i, (_, _, m) in enumerate(self._queue):
            key = m.ordering_key
            if key is not None:
                held = first_of_key.get(key)
                if held is None or _published(m) < _published(self._queue[held][2]):
                    first_of_key[key] = i
        eligible = [
            i
            for i, (_, _, m) in enumerate(self._queue)
            if m.ordering_key is None or first_of_key[m.ordering_key] == i
        ]
        return min(eligible, key=lambda i: _entry_order(self._queue[i]))


def _entry_order(entry: _Entry) -> tuple[float, int]:
    return entry[0], entry[1]


def _published(message: Message) -> int:
    return int(message.id[5:])  # "test-<n>", numbered in publish order
