"""Per-partition commit tracking: never commit past a message that is not settled.

Handlers finish out of order on the thread pool, but a Kafka commit is one offset
per partition: "everything below this is done". So each partition keeps the offsets
it handed to the worker, in order, and commits only up to the first one that is not
settled (acked, dead-lettered, or copied to a retry topic). Worked example, offsets
handed out 10-14, settled in the order 11, 14, 10, 12::

    handed out   10 11 12 13 14      position (what a commit would say)
    settle 11    .  ✓  .  .  .       10   (10 still runs)
    settle 14    .  ✓  .  .  ✓       10
    settle 10    ✓  ✓  .  .  ✓       12   (10 and 11 done; 12 not)
    settle 12    ✓  ✓  ✓  .  ✓       13   (13 holds the partition back)

Offsets need not be dense (compaction and transaction markers leave gaps): only
offsets that were handed out count, and the position after the last one is the
last handed out + 1. A message *released in place* (handed back without a run,
e.g. at shutdown) stays unsettled, so the position stays at or below it and its
partition's next owner reads it again.

Not thread-safe on its own: the transport calls it under its lock.
"""

from __future__ import annotations

from collections import deque


class PartitionTracker:
    __slots__ = ("_done", "_next", "_out", "_pending", "_released", "committed")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()  # handed out and not yet passed, in order
        self._done: set[int] = set()  # settled offsets still in _pending
        self._out: set[int] = set()  # with the worker now (not settled, not released)
        self._released: set[int] = set()  # handed back in place, unsettled
        self._next: int | None = None  # 1 + the last offset handed out
        #: The position the broker last confirmed for this partition (None: none yet).
        self.committed: int | None = None

    def hand_out(self, offset: int) -> None:
        """``offset`` goes to the worker (again, if it was released in place)."""
        if offset in self._released:
            self._released.discard(offset)
        elif self._next is None or offset >= self._next:
            self._pending.append(offset)
            self._next = offset + 1
        self._out.add(offset)

    def settle(self, offset: int) -> bool:
        """``offset`` is done for good; False if it was not out (settled twice)."""
        if offset not in self._out:
            return False
        self._out.discard(offset)
        self._done.add(offset)
        pending, done = self._pending, self._done
        while pending and pending[0] in done:
            done.discard(pending.popleft())
        return True

    def release(self, offset: int) -> bool:
        """``offset`` came back without a run: it stays below the position."""
        if offset not in self._out:
            return False
        self._out.discard(offset)
        self._released.add(offset)
        return True

    @property
    def position(self) -> int | None:
        """The offset a commit would name: the first unsettled one handed out, or
        the one after the last handed out; None before anything was handed out."""
        return self._pending[0] if self._pending else self._next

    @property
    def out(self) -> int:
        """Messages with the worker now (in its ring, timer wheel or handlers)."""
        return len(self._out)

    @property
    def unsettled(self) -> int:
        """Offsets handed out and not settled (held back by the first of them)."""
        return len(self._pending) - len(self._done)

    @property
    def highest_out(self) -> int | None:
        return max(self._out) if self._out else None

    @property
    def dirty(self) -> bool:
        """Whether a commit would move the broker's position forward."""
        position = self.position
        return position is not None and (self.committed is None or position > self.committed)
