"""The process-local idempotency store."""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from taskorbit.errors import ConfigurationError
from taskorbit.idempotency.base import ClaimState, check_ttl

# (state, expires_at, version): the version matches the key's latest record in the
# expiry heap. A plain tuple, because building a NamedTuple per claim costs more
# than the rest of the claim together.
_Entry = tuple[ClaimState, float, int]


class MemoryStore:
    """A process-local :class:`IdempotencyStore`, bounded to ``max_keys`` keys.

    Entries expire after their TTL. When a write would go over ``max_keys``, the
    store first forgets expired entries, then the oldest ones (least recently
    claimed or completed), whatever their state. Forgetting a live key weakens the
    guarantee for that key only: an evicted DONE key runs again if a duplicate
    arrives, an evicted IN_PROGRESS key lets a duplicate run alongside the first.
    Size ``max_keys`` above the number of keys you see within one TTL.

    Being in memory, it deduplicates within one process only; use the Redis store
    to deduplicate across workers.
    """

    def __init__(
        self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigurationError(f"max_keys must be a whole number >= 1, got {max_keys!r}")
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # Guarded by self._lock. Insertion order is write order, oldest first.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # Heap of (expires_at, version, key); a record whose version no longer
        # matches its key's entry is stale and skipped.
        self._expiry: list[tuple[float, int, str]] = []
        self._version = 0

    def claim_many(self, keys: Sequence[str], ttl_s: float) -> list[ClaimState]:
        check_ttl(ttl_s)
        with self._lock:
            now = self._clock()
            self._forget_expired(now)
            states = []
            for key in keys:
                entry = self._entries.get(key)
                if entry is None:
                    self._write(key, _IN_PROGRESS, now + ttl_s)
                    states.append(_NEW)
                else:
                    states.append(entry[0])
            self._evict_oldest()
            return states

    def complete(self, key: str, ttl_s: float) -> None:
        check_ttl(ttl_s)
        with self._lock:
            now = self._clock()
            self._forget_expired(now)
            self._write(key, ClaimState.DONE, now + ttl_s)
            self._evict_oldest()

    def release(self, key: str) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is _IN_PROGRESS:
                del self._entries[key]  # its expiry record turns stale

    def __len__(self) -> int:
        """Live keys (in progress or done, not expired)."""
        with self._lock:
            self._forget_expired(self._clock())
            return len(self._entries)

    # -- internals, called with self._lock held --------------------------------

    def _write(self, key: str, state: ClaimState, expires_at: float) -> None:
        self._version = version = self._version + 1
        entries = self._entries
        if key in entries:
            entries.move_to_end(key)  # a rewrite makes the key the newest
        entries[key] = (state, expires_at, version)
        heapq.heappush(self._expiry, (expires_at, version, key))
        # Every rewrite leaves a stale record behind; rebuild before they pile up.
        if len(self._expiry) > 2 * len(entries) + 1024:
            self._expiry = [(e[1], e[2], k) for k, e in entries.items()]
            heapq.heapify(self._expiry)

    def _forget_expired(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, version, key = heapq.heappop(self._expiry)
            entry = self._entries.get(key)
            if entry is not None and entry[2] == version:
                del self._entries[key]

    def _evict_oldest(self) -> None:
        while len(self._entries) > self._max_keys:
            self._entries.popitem(last=False)


_NEW = ClaimState.NEW  # enum attribute lookups are slow on CPython 3.11; claims are hot
_IN_PROGRESS = ClaimState.IN_PROGRESS
