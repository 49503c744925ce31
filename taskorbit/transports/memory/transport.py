"""The in-process transport: the zero-dependency default and the test double.

It behaves like a small broker: published messages wait in a queue, a received
message stays "in flight" until it is acked, nacked or dead-lettered, a nack
delivers it again carrying the attempt the runtime set on it, and delays are
honoured. Everything lives
in this process's memory, so a crash loses it, by design.

For tests: ``dead_letters`` lists what was dead-lettered (with reason and attempts
in the attributes), ``acked`` counts deletions, and ``wait_idle`` returns once
nothing is queued, delayed or in flight.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence

import msgspec

from taskorbit.message import DLQ_ATTEMPTS_ATTR, DLQ_REASON_ATTR, DLQ_TIME_ATTR, Message
from taskorbit.transports.base import AckFailure, Transport


class MemoryTransport(Transport):
    name = "memory"
    durable = False
    max_batch = 4096

    def __init__(self, *, ordered: bool = False) -> None:
        #: Deliver like an SQS FIFO queue: while a message of an ordering key is in
        #: flight or delayed, no other message of that key is handed out, and the
        #: messages of a key come out in the order they were published.
        self.ordered = ordered
        # Hot paths take the plain lock (a C-level context manager) and notify only
        # when someone waits: Condition's own __enter__ and notify_all are Python
        # code and cost more than the rest of a one-message publish.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting = 0  # threads inside self._cond.wait(); guarded by self._lock
        self._ready: deque[Message] = deque()  # guarded by self._lock
        self._delayed: list[tuple[float, int, Message]] = []  # heap by wall-clock due time
        self._in_flight: dict[str, Message] = {}  # by message id; guarded by self._lock
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self.dead_letters: list[Message] = []  # guarded by self._lock
        self.acked = 0
        self.published = 0

    # -- producer ----------------------------------------------------------------

    def publish(self, messages: Sequence[Message]) -> list[str]:
        ids: list[str] = []
        now = time.time()
        with self._lock:
            # The transport takes ownership of the published Message objects (a copy
            # per message would cost more than the rest of publish).
            for m in messages:
                m.id = f"mem-{next(self._ids)}"
                m.attempt = 1
                ids.append(m.id)
                if m.not_before is not None and m.not_before > now:
                    heapq.heappush(self._delayed, (m.not_before, next(self._seq), m))
                else:
                    m.not_before = None
                    self._ready.append(m)
            self.published += len(ids)
            self._wake()
        return ids

    def _wake(self) -> None:
        if self._waiting:
            self._cond.notify_all()

    def _wait(self, timeout: float) -> None:
        self._waiting += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._waiting -= 1

    # -- consumer ----------------------------------------------------------------

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                self._promote_due(time.time())
                if self._ready:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                if self._delayed:
                    remaining = min(remaining, max(0.0, self._delayed[0][0] - time.time()))
                self._wait(remaining)
            if self.ordered:
                batch = self._take_in_key_order(max_messages)
                if not batch:
                    self._wait(max(0.0, min(0.05, deadline - time.monotonic())))
                    return []
            else:
                count = min(max_messages, len(self._ready))
                popleft = self._ready.popleft
                batch = [popleft() for _ in range(count)]
            now = time.monotonic()
            for m in batch:
                m.received_at = now
                self._in_flight[m.id] = m
        return batch

    def _take_in_key_order(self, max_messages: int) -> list[Message]:
        """Ready messages whose key has nothing out, in publish order (so each key's
        come out in its own order). Called with self._lock held; O(queue) per call,
        which suits a test double."""
        busy = {m.ordering_key for m in self._in_flight.values()}
        busy.update(m.ordering_key for _, _, m in self._delayed)
        busy.discard(None)
        eligible = [m for m in self._ready if m.ordering_key not in busy]
        eligible.sort(key=_publish_order)
        taken = eligible[:max_messages]
        if taken:
            chosen = {id(m) for m in taken}
            self._ready = deque(m for m in self._ready if id(m) not in chosen)
        return taken

    def _promote_due(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, _, m = heapq.heappop(self._delayed)
            m.not_before = None
            self._ready.append(m)

    def ack(self, messages: Sequence[Message]) -> list[AckFailure]:
        failures: list[AckFailure] = []
        with self._lock:
            for m in messages:
                if self._in_flight.pop(m.id, None) is None:
                    failures.append(AckFailure(m, "not in flight (already settled?)", False))
            self.acked += len(messages) - len(failures)
            if not self._in_flight:
                self._wake()
        return failures

    def nack(self, messages: Sequence[Message], delay: float = 0.0) -> None:
        due = time.time() + delay
        with self._lock:
            for m in messages:
                if self._in_flight.pop(m.id, None) is None:
                    continue
                if delay > 0:
                    heapq.heappush(self._delayed, (due, next(self._seq), m))
                elif self.ordered and m.ordering_key is not None:
                    self._ready.appendleft(m)  # first in line again, as in a FIFO group
                else:
                    self._ready.append(m)
            self._wake()

    def dead_letter(self, message: Message, reason: str) -> None:
        attributes = {
            **message.attributes,
            DLQ_REASON_ATTR: reason,
            DLQ_ATTEMPTS_ATTR: str(message.attempt),
            DLQ_TIME_ATTR: f"{time.time():.3f}",
        }
        with self._lock:
            self._in_flight.pop(message.id, None)
            self.dead_letters.append(msgspec.structs.replace(message, attributes=attributes))
            self._wake()

    # -- for tests ---------------------------------------------------------------

    def pending(self) -> dict[str, int]:
        with self._lock:
            return {
                "ready": len(self._ready),
                "delayed": len(self._delayed),
                "in_flight": len(self._in_flight),
            }

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is queued, delayed or in flight; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._ready or self._delayed or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wait(min(remaining, 0.05))
        return True


def _publish_order(message: Message) -> int:
    return int(message.id[4:])  # "mem-<n>", numbered in publish order
