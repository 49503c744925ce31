"""The bounded ring buffer between the poller and the dispatcher, backed by C.

This is the only module that talks to the compiled ``taskorbit.worker._ringbuf``: it turns
the C return codes into results and exceptions, and owns the Python objects.

Ownership: C stores 64-bit tokens, never object pointers. Every put takes a fresh
number from an ``itertools.count`` and records ``number -> what was put`` in a dict
*before* pushing, so a consumer that pops a token always finds its object.
``next()`` on a count and single dict, list and bytearray operations are atomic
under the GIL, which makes this safe with any number of producer and consumer
threads.

- ``put(item)`` records ``_singles[number] = item`` and pushes one token,
  ``number << 24 | SINGLE``. Whoever takes that token pops the entry.
- ``put_many(items)`` records ``_batches[number] = (items, left)`` and pushes the
  tokens ``number << 24 | i`` for i = 0..n-1, generated in C. ``get_many`` gets
  them back from C as runs (first token, length), so a batch costs a handful of
  Python operations rather than several per item. ``left`` has one byte per item
  not yet taken; whoever takes the last item of a batch forgets the batch.

After ``drain()`` both dicts are empty: nothing leaks.

Every C call releases the GIL (cffi's API mode does so for all calls), so a
consumer blocked in ``get_many`` costs nothing to other threads.

Overflow policies, when the ring is full::

    BLOCK        wait up to `timeout` for room; what did not fit in time is returned
    DROP_NEWEST  store what fits now; the new items that did not fit are returned
    DROP_OLDEST  evict the oldest stored items to make room; they are returned
    REJECT       store the whole batch if it fits now, else none of it (returned)

Every put returns the list of items it did not keep, so nothing disappears
silently: ``ring.put(x) == []`` means ``x`` is stored.
"""

from __future__ import annotations

import enum
import errno
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from taskorbit.errors import ConfigurationError, RingClosed, TaskorbitError
from taskorbit.worker._ringbuf import ffi, lib

__all__ = ["MAX_CAPACITY", "Overflow", "Ring", "RingStats"]

T = TypeVar("T")

MAX_CAPACITY: int = int(lib.RING_MAX_CAPACITY)

# Token layout: number << _SHIFT | index. Index _SINGLE marks a token from put();
# a batch uses indices 0 .. _SINGLE - 1, so put_many sends at most that many per call.
_SHIFT: int = int(lib.RING_BATCH_SHIFT)
_INDEX_MASK = (1 << _SHIFT) - 1
_SINGLE = _INDEX_MASK
# Numbers wrap so that every token stays below 2^63, which ring_pop_one needs to
# tell a token from an error. They wrap after 5.5e11 puts; a number still in use
# then is skipped.
_NUMBER_MASK = (1 << (63 - _SHIFT)) - 1
_MAX_BATCH = _SINGLE - 1  # put_many sends larger batches in several calls

# Timeouts of more than about 146 years (2^62 ns) mean "forever"; float("inf") too.
_FOREVER_S = 2.0**62 / 1e9

# get_many takes at most this many items per call, so the output buffer it keeps
# per thread stays at most 1 MiB however large the ring is; drain() uses less.
_MAX_TAKE = 65536
_DRAIN_CHUNK = 4096

# Bound once: each attribute lookup on `lib` costs time on the hot path.
_push_one = lib.ring_push_one
_push_seq = lib.ring_push_seq
_pop_one = lib.ring_pop_one
_pop_runs = lib.ring_pop_runs
_NULL = ffi.NULL
_EPIPE = -errno.EPIPE
_ETIMEDOUT = -errno.ETIMEDOUT


class Overflow(str, enum.Enum):
    """What a put does when the ring is full."""

    BLOCK = "block"
    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"
    REJECT = "reject"


_POLICY_CODE: dict[str, int] = {
    Overflow.BLOCK.value: lib.RING_BLOCK,
    Overflow.DROP_NEWEST.value: lib.RING_DROP_NEWEST,
    Overflow.DROP_OLDEST.value: lib.RING_DROP_OLDEST,
    Overflow.REJECT.value: lib.RING_REJECT,
}
_DROP_OLDEST: int = lib.RING_DROP_OLDEST


@dataclass(frozen=True)
class RingStats:
    """Counters since the ring was created, and its length at that moment."""

    enqueued: int  # items stored
    dequeued: int  # items taken by get/get_many/drain
    dropped: int  # items handed back by DROP_NEWEST and DROP_OLDEST
    rejected: int  # items handed back by REJECT, and by BLOCK when its timeout expired
    high_water: int  # the largest length ever reached
    length: int
    capacity: int


# The items of one put_many (None once taken), and one byte per item not yet taken.
_Batch = tuple[list[Any], bytearray]


def _overflow(value: Overflow | str) -> Overflow:
    """Validate a policy given as an Overflow or its name, e.g. ``"drop_oldest"``."""
    try:
        return Overflow(value.lower())
    except (ValueError, AttributeError):
        valid = ", ".join(repr(p.value) for p in Overflow)
        raise ConfigurationError(f"unknown overflow policy {value!r}; use one of {valid}") from None


def _timeout_ns(timeout: float | None) -> int:
    """Seconds → the C convention: -1 waits forever, 0 does not wait."""
    if timeout is None or timeout >= _FOREVER_S:
        return -1
    if not timeout >= 0:  # also catches NaN
        raise ConfigurationError(f"timeout must be >= 0 seconds or None, not {timeout!r}")
    return int(timeout * 1e9)


def _error(rc: int) -> TaskorbitError:
    """The exception for a negative return code that the caller did not expect."""
    if rc == _EPIPE:
        return RingClosed("the ring is closed; nothing more can be put into it")
    return TaskorbitError(f"ring call failed: {errno.errorcode.get(-rc, rc)}")


class Ring(Generic[T]):
    """A bounded FIFO of Python objects, safe for many producer and consumer threads.

    >>> ring: Ring[str] = Ring(3, overflow="drop_oldest")
    >>> ring.capacity                       # rounded up to a power of two
    4
    >>> ring.put_many(["a", "b", "c", "d", "e"])   # "a" was evicted for "e"
    ['a']
    >>> ring.get_many(10)
    ['b', 'c', 'd', 'e']
    """

    __slots__ = (
        "_batches",
        "_buffers",
        "_numbers",
        "_policy",
        "_ring",
        "_singles",
        "capacity",
        "overflow",
    )

    def __init__(self, capacity: int, *, overflow: Overflow | str = Overflow.BLOCK) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ConfigurationError(f"capacity must be an integer >= 1, not {capacity!r}")
        if capacity > MAX_CAPACITY:
            raise ConfigurationError(f"capacity must be at most {MAX_CAPACITY}, not {capacity}")
        self.overflow: Overflow = _overflow(overflow)
        self._policy: int = _POLICY_CODE[self.overflow.value]
        self._ring = self._new_ring(capacity)
        self.capacity: int = int(lib.ring_capacity(self._ring))
        self._numbers = itertools.count()
        self._singles: dict[int, T] = {}  # number -> the item of a put()
        self._batches: dict[int, _Batch] = {}  # number -> (items, left) of a put_many()
        # Output buffers per thread: cffi releases the GIL inside each call, so
        # two threads must never share one.
        self._buffers = threading.local()

    @staticmethod
    def _new_ring(capacity: int, start_pos: int = 0) -> Any:
        out = ffi.new("ring_t **")
        rc = lib.ring_new_at(capacity, start_pos, out)
        if rc == -errno.ENOMEM:
            raise MemoryError(f"cannot allocate a ring of {capacity} slots")
        if rc != 0:
            raise _error(rc)
        return ffi.gc(out[0], lib.ring_free)

    @classmethod
    def _starting_at(cls, capacity: int, start_pos: int, **kwargs: Any) -> Ring[Any]:
        """A ring whose positions start at ``start_pos``: a test hook for wrap-around."""
        ring: Ring[Any] = cls(capacity, **kwargs)
        ring._ring = cls._new_ring(capacity, start_pos)
        return ring

    def _unused_number(self, entries: dict[int, Any]) -> int:
        """A number not in ``entries``; needed only once numbers have wrapped."""
        while (number := next(self._numbers) & _NUMBER_MASK) in entries:
            pass
        return number

    # -- putting -------------------------------------------------------------

    def put(
        self, item: T, timeout: float | None = None, *, overflow: Overflow | str | None = None
    ) -> list[T]:
        """Store one item; return the items not kept (``[]`` when ``item`` is stored).

        ``timeout`` (seconds, None = forever) applies to BLOCK only. Under
        DROP_OLDEST the returned list holds the evicted item, if any.
        Raises RingClosed if the ring is closed.
        """
        policy = self._policy if overflow is None else _POLICY_CODE[_overflow(overflow).value]
        if policy == _DROP_OLDEST:  # needs a buffer for the evicted token
            return self.put_many((item,), overflow=Overflow.DROP_OLDEST)
        singles = self._singles
        number = next(self._numbers) & _NUMBER_MASK
        if number in singles:
            number = self._unused_number(singles)
        singles[number] = item  # before the push: a consumer may pop the token at once
        rc = _push_one(
            self._ring,
            number << _SHIFT | _SINGLE,
            policy,
            -1 if timeout is None else _timeout_ns(timeout),
        )
        if rc == 1:
            return []
        del singles[number]
        if rc == 0:
            return [item]
        raise _error(rc)

    def put_many(
        self,
        items: Sequence[T],
        timeout: float | None = None,
        *,
        overflow: Overflow | str | None = None,
    ) -> list[T]:
        """Store items in order under one lock acquisition; return the items not kept.

        BLOCK stores what fits and waits for room for the rest; when ``timeout``
        expires the items not yet stored are returned. If the ring is closed while
        a BLOCK put waits, the items not stored are returned (check ``closed``).
        Raises RingClosed if the ring was closed before anything was stored.
        More than 2^24 - 1 items go in several calls, each with the full timeout.
        """
        n = len(items)
        if n == 0:
            return []
        if n > _MAX_BATCH:
            return self._put_in_chunks(items, timeout, overflow)
        policy = self._policy if overflow is None else _POLICY_CODE[_overflow(overflow).value]
        batches = self._batches
        number = next(self._numbers) & _NUMBER_MASK
        if number in batches:
            number = self._unused_number(batches)
        batches[number] = (list(items), bytearray(n))  # before the push, as in put()
        if policy == _DROP_OLDEST:
            dropped = ffi.new("uint64_t[]", n)
            dropped_n = ffi.new("size_t *")
            rc = _push_seq(self._ring, number << _SHIFT, n, policy, -1, dropped, dropped_n)
            if rc < 0:
                # Nothing of this batch went in (a closed ring): forget it here, or
                # the dict would keep every item of it alive for good.
                del batches[number]
                raise _error(rc)
            not_kept = self._take_tokens(ffi.unpack(dropped, dropped_n[0]))
        else:
            timeout_ns = -1 if timeout is None else _timeout_ns(timeout)
            rc = _push_seq(self._ring, number << _SHIFT, n, policy, timeout_ns, _NULL, _NULL)
            if rc == n:
                return []
            stored = max(rc, 0)
            not_kept = self._take(number, stored, n - stored)
        if rc < 0:
            raise _error(rc)
        return not_kept

    def _put_in_chunks(
        self, items: Sequence[T], timeout: float | None, overflow: Overflow | str | None
    ) -> list[T]:
        not_kept: list[T] = []
        for start in range(0, len(items), _MAX_BATCH):
            not_kept += self.put_many(items[start : start + _MAX_BATCH], timeout, overflow=overflow)
        return not_kept

    def wait_not_full(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` for a free slot. False on timeout or if the ring is closed."""
        return int(lib.ring_wait_not_full(self._ring, _timeout_ns(timeout))) > 0

    # -- getting -------------------------------------------------------------

    def get(self, timeout: float | None = None) -> T | None:
        """Take the oldest item, waiting up to ``timeout`` (None = forever).

        Returns None on timeout, or when the ring is closed and empty.
        """
        token = _pop_one(self._ring, -1 if timeout is None else _timeout_ns(timeout))
        if token >= 0:
            if token & _INDEX_MASK == _SINGLE:
                return self._singles.pop(token >> _SHIFT)
            return self._take(token >> _SHIFT, token & _INDEX_MASK, 1)[0]
        if token in (_ETIMEDOUT, _EPIPE):
            return None
        raise _error(token)

    def get_many(self, max_items: int, timeout: float | None = None) -> list[T]:
        """Take up to ``max_items`` (65536 at most), oldest first; wait ``timeout`` for the first.

        Returns ``[]`` on timeout, or when the ring is closed and empty; a closed
        ring still hands out what it holds.
        """
        if max_items < 1:
            raise ConfigurationError(f"max_items must be >= 1, not {max_items!r}")
        # C never returns more than it holds, and the buffer is kept per thread.
        max_items = min(max_items, self.capacity, _MAX_TAKE)
        buf = getattr(self._buffers, "runs", None)
        if buf is None or len(buf) < 2 * max_items:
            buf = self._buffers.runs = ffi.new("uint64_t[]", max(2 * max_items, 128))
        runs = _pop_runs(
            self._ring, buf, max_items, -1 if timeout is None else _timeout_ns(timeout)
        )
        if runs == 1:  # the common case: one batch, or a single put
            token = buf[0]
            if token & _INDEX_MASK == _SINGLE:
                return [self._singles.pop(token >> _SHIFT)]
            return self._take(token >> _SHIFT, token & _INDEX_MASK, buf[1])
        if runs > 1:
            return self._take_runs(ffi.unpack(buf, 2 * runs))
        if runs == 0 or runs == _EPIPE:
            return []
        raise _error(runs)

    def drain(self) -> list[T]:
        """Take everything stored now, without waiting (for shutdown)."""
        items: list[T] = []
        chunk = min(self.capacity, _DRAIN_CHUNK)
        while True:
            taken = self.get_many(chunk, timeout=0)
            items += taken
            if len(taken) < chunk:
                return items

    def _take_runs(self, runs: list[int]) -> list[T]:
        """The items of runs ``[first_token, length, first_token, length, ...]``."""
        singles = self._singles
        items: list[T] = []
        for i in range(0, len(runs), 2):
            token = runs[i]
            if token & _INDEX_MASK == _SINGLE:  # a run of one, from put()
                items.append(singles.pop(token >> _SHIFT))
            else:
                items += self._take(token >> _SHIFT, token & _INDEX_MASK, runs[i + 1])
        return items

    def _take_tokens(self, tokens: list[int]) -> list[T]:
        """The items of plain tokens, as DROP_OLDEST hands them back."""
        return self._take_runs([x for token in tokens for x in (token, 1)])

    def _take(self, number: int, index: int, count: int) -> list[T]:
        """Items index .. index+count-1 of a batch, which have left the ring for good."""
        items, left = self._batches[number]
        if count == len(items):  # the whole batch in one run: nobody else holds any of it
            del self._batches[number]
            return items
        end = index + count
        taken = items[index:end]
        items[index:end] = [None] * count  # let go of them now, not with the batch
        del left[:count]  # atomic: concurrent takers of one batch never lose a count
        if not left:
            self._batches.pop(number, None)
        return taken

    def _holding(self) -> int:
        """How many items the ring's dicts still own (for leak checks in tests)."""
        return len(self._singles) + sum(len(left) for _, left in list(self._batches.values()))

    # -- state ---------------------------------------------------------------

    def close(self) -> None:
        """Refuse further puts and wake every waiter; gets still drain what is left."""
        lib.ring_close(self._ring)

    @property
    def closed(self) -> bool:
        return bool(lib.ring_is_closed(self._ring))

    def __len__(self) -> int:
        return int(lib.ring_len(self._ring))

    @property
    def free(self) -> int:
        """Slots free right now; a snapshot that other threads may change at once."""
        return self.capacity - int(lib.ring_len(self._ring))

    def stats(self) -> RingStats:
        out = ffi.new("ring_stats_t *")
        lib.ring_stats(self._ring, out)
        return RingStats(
            enqueued=out.enqueued,
            dequeued=out.dequeued,
            dropped=out.dropped,
            rejected=out.rejected,
            high_water=out.high_water,
            length=out.length,
            capacity=out.capacity,
        )

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)}/{self.capacity}"
        return f"<Ring {state} overflow={self.overflow.value}>"
