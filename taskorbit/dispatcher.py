"""Ring → worker threads, bounded by free workers, never idle-spinning.

The dispatcher thread (``taskorbit-dispatcher``) waits, with the GIL released,
inside the C ring for messages, admits them (ETA check, ordering keys, one
idempotency claim per batch) into a small ready queue, and starts a *runner* on
the ThreadPoolExecutor for each free worker slot. A runner takes messages one at
a time from the ready queue; when that is empty it pulls the next small batch from
the ring itself without waiting, and exits only when the ring is empty too.

Why runners instead of one executor task per message: under load a runner stays
alive and the cost of ``executor.submit`` (a lock, a future, a wake-up) is paid
once per burst, not once per message. Why one shared ready queue instead of a
batch per runner: a slow message holds up only its own runner; the others keep
taking the messages behind it. The two faults of go-task-orbit (design §8) cannot
happen here: nothing polls an empty ring, and a worker that finishes takes the
next message at once instead of waiting for the rest of its batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from taskorbit.idempotency import ClaimState, IdempotencyStore
from taskorbit.message import Message
from taskorbit.ring import Ring

logger = logging.getLogger("taskorbit.dispatcher")

Item = tuple[Message, "ClaimState | None"]


class Dispatcher:
    def __init__(
        self,
        ring: Ring[Message],
        *,
        concurrency: int,
        run_one: Callable[[Message, ClaimState | None], None],
        defer: Callable[[Message, float], None],
        store: IdempotencyStore | None,
        idempotency_attr: str,
        claim_ttl_s: float,
        ordered: bool,
        chunk: int = 64,
    ) -> None:
        self._ring = ring
        self._concurrency = concurrency
        self._run_one = run_one
        self._defer = defer  # hands a message that is not yet due back for later
        self._store = store
        self._attr = idempotency_attr
        self._claim_ttl_s = claim_ttl_s
        self._ordered = ordered
        self._chunk = chunk
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="taskorbit-worker")
        self._ready: deque[Item] = deque()  # appended/popped atomically under the GIL
        self._cond = threading.Condition()
        self._free = concurrency  # worker slots without a runner; guarded by self._cond
        self._halt = False  # runners take nothing new once set
        self._order_lock = threading.Lock()
        # ordering key -> messages waiting for the one in flight; guarded by self._order_lock
        self._parked: dict[str, deque[Item]] = {}
        self._thread = threading.Thread(target=self._loop, name="taskorbit-dispatcher", daemon=True)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def halt(self) -> list[Message]:
        """Stop starting messages; return those admitted but not started."""
        self._halt = True
        with self._cond:
            self._cond.notify_all()
        self._thread.join()
        left: list[Message] = []
        while self._ready:
            left.append(self._ready.popleft()[0])
        with self._order_lock:
            for parked in self._parked.values():
                left.extend(m for m, _ in parked)
            self._parked.clear()
        return left

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no runner is active (every started handler returned)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._free < self._concurrency:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def shutdown_executor(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def active_runners(self) -> int:
        return self._concurrency - self._free

    @property
    def waiting(self) -> int:
        return len(self._ready)

    # -- ordering ------------------------------------------------------------------

    def finished(self, message: Message) -> None:
        """The message left the worker for good: release its ordering key."""
        key = message.ordering_key
        if not self._ordered or key is None:
            return
        with self._order_lock:
            parked = self._parked.get(key)
            if parked:
                self._ready.append(parked.popleft())
            else:
                self._parked.pop(key, None)
                return
        self._spawn()

    # -- the loop ------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._free == 0 and not self._halt:
                    self._cond.wait()
                if self._halt:
                    return
                room = self._free * self._chunk
            if self._ready:
                self._spawn()
            try:
                # Waits inside C with the GIL released: an idle worker costs nothing.
                batch = self._ring.get_many(room, timeout=0.25)
            except Exception:
                logger.exception("dispatcher could not read the ring; continuing")
                time.sleep(0.1)
                continue
            if batch:
                self._admit(batch)
            elif self._ring.closed and len(self._ring) == 0:
                return

    def _admit(self, batch: list[Message]) -> None:
        now = time.time()
        due: list[Message] = []
        for message in batch:
            # An ETA or a long delay re-published by the transport: not yet.
            if message.not_before is not None and message.not_before > now + 0.001:
                self._defer(message, message.not_before - now)
            else:
                due.append(message)
        if not due:
            return
        items = self._claim(due)
        if self._ordered:
            items = self._park_ordered(items)
        self._ready.extend(items)
        self._spawn()

    def _claim(self, messages: list[Message]) -> list[Item]:
        if self._store is None:
            return [(m, None) for m in messages]
        keyed: list[tuple[int, str]] = []
        for i, m in enumerate(messages):
            key = m.attributes.get(self._attr)
            if key:
                keyed.append((i, key))
        states: list[ClaimState | None] = [None] * len(messages)
        if keyed:
            try:
                # One round trip for the whole batch.
                claimed = self._store.claim_many([k for _, k in keyed], self._claim_ttl_s)
            except Exception:
                logger.exception("idempotency store failed; deferring %d messages", len(messages))
                for m in messages:
                    self._defer(m, 1.0)
                return []
            for (i, _), state in zip(keyed, claimed, strict=False):
                states[i] = state
        return list(zip(messages, states, strict=False))

    def _park_ordered(self, items: list[Item]) -> list[Item]:
        runnable: list[Item] = []
        with self._order_lock:
            for item in items:
                key = item[0].ordering_key
                if key is None:
                    runnable.append(item)
                elif key in self._parked:
                    self._parked[key].append(item)  # one of its group is in flight
                else:
                    self._parked[key] = deque()
                    runnable.append(item)
        return runnable

    def _spawn(self) -> None:
        with self._cond:
            wanted = min(self._free, len(self._ready))
            self._free -= wanted
        for _ in range(wanted):
            self._executor.submit(self._runner)

    def _runner(self) -> None:
        try:
            while not self._halt:
                try:
                    message, claim = self._ready.popleft()
                except IndexError:
                    # Keep this thread busy while there is work: a non-waiting pull.
                    batch = self._ring.get_many(self._chunk, timeout=0)
                    if not batch:
                        break
                    self._admit(batch)
                    continue
                try:
                    self._run_one(message, claim)
                except Exception:
                    logger.exception("unexpected failure running %s; continuing", message.id)
        finally:
            with self._cond:
                self._free += 1
                self._cond.notify_all()
            # Something may have been admitted while this runner was leaving and saw
            # no free slot then; now there is one.
            if self._ready and not self._halt:
                self._spawn()
