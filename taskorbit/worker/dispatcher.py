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
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from taskorbit.idempotency import ClaimState, IdempotencyStore
from taskorbit.message import Message
from taskorbit.worker.inflight import InFlight
from taskorbit.worker.ring import Ring

logger = logging.getLogger("taskorbit.worker.dispatcher")

Item = tuple[Message, "ClaimState | None"]

_NEW = ClaimState.NEW  # enum member lookups are slow on CPython 3.11; claims are hot


class Dispatcher:
    def __init__(
        self,
        ring: Ring[Message],
        *,
        concurrency: int,
        run_one: Callable[[Message, ClaimState | None], None],
        defer: Callable[[Message, float], None],
        hand_back: Callable[[list[Message]], None],
        reject: Callable[[Message, str], None],
        unsettled: Callable[[Message], bool],
        inflight: InFlight,
        store: IdempotencyStore | None,
        idempotency_attr: str,
        claim_ttl_s: float,
        ordered: bool,
        chunk: int = 64,
        owns: Callable[[Message], bool] | None = None,
    ) -> None:
        self._ring = ring
        self._concurrency = concurrency
        self._run_one = run_one
        self._defer = defer  # hands a message that is not yet due back for later
        self._hand_back = hand_back  # to the broker at once, attempt unchanged
        self._reject = reject  # dead-letters a message that cannot even be admitted
        self._unsettled = unsettled  # held by the worker, and not waiting in a timer
        self._inflight = inflight
        self._store = store
        self._attr = idempotency_attr
        self._claim_ttl_s = claim_ttl_s
        self._ordered = ordered
        self._chunk = chunk
        # Transport.owns: False for a message the broker gave to another consumer
        # meanwhile (a revoked Kafka partition); it is handed back, not run.
        self._owns = owns
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="taskorbit-worker")
        # Runners pop from _ready without a lock (deque pops are atomic under the
        # GIL); everything that puts messages in, and the state below, is guarded
        # by self._cond, so that halt() sees every admitted message exactly once.
        self._ready: deque[Item] = deque()
        self._cond = threading.Condition()
        self._free = concurrency  # worker slots without a runner; guarded by self._cond
        self._halt = False  # nothing new starts once set; guarded by self._cond
        # ordering key -> id() of the one message of that key the worker has let
        # run (it keeps the key while it waits in the timer wheel for a retry), and
        # the messages of that key waiting behind it; both guarded by self._cond.
        self._owner: dict[str, int] = {}
        # Parked messages are not claimed yet: a message waiting behind the holder of
        # its ordering key is claimed when it becomes runnable, so that a twin of the
        # holder (same idempotency key) does not bounce as a duplicate of it.
        self._parked: dict[str, deque[Message]] = {}
        self._thread = threading.Thread(target=self._loop, name="taskorbit-dispatcher", daemon=True)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def halt(self) -> list[Message]:
        """Stop starting messages; return those admitted but not started.

        A runner that is admitting a batch right now finds the dispatcher halted
        when it parks or enqueues the batch, and hands it back itself.
        """
        with self._cond:
            self._halt = True
            self._cond.notify_all()
            left = [m for m, _ in self._ready]
            self._ready.clear()
            for parked in self._parked.values():
                left.extend(parked)
            self._parked.clear()
            self._owner.clear()
        self._thread.join()
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
        return len(self._ready) + sum(len(p) for p in list(self._parked.values()))

    @property
    def keys_held(self) -> int:
        """Ordering keys some message holds right now (0 when idle: nothing jammed)."""
        return len(self._owner)

    # -- ordering ------------------------------------------------------------------

    def release_order(self, message: Message, *, to_broker: bool) -> list[Message]:
        """``message`` left the worker for good: free its ordering key.

        When it went back to the broker (a retry or hand-back), the messages of its
        key parked behind it are returned too, for the caller to hand back: the
        broker redelivers them after it, in order (an SQS FIFO group and a Pub/Sub
        ordering key are blocked while one of theirs is out). When it was acked or
        dead-lettered, the next parked message of the key is claimed and runs.
        """
        key = message.ordering_key
        if not self._ordered or key is None:
            return []
        with self._cond:
            if self._owner.get(key) != id(message):
                return []  # it never held the key (parked, deferred, not yet admitted)
            parked = self._parked.pop(key, None)
            del self._owner[key]
            if not parked:
                return []
            if to_broker:
                return list(parked)
            successor = parked.popleft()
            self._owner[key] = id(successor)
            if parked:
                self._parked[key] = parked
        self._enqueue(self._claim([successor]))
        return []

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
                self._admit_safely(batch)
            elif self._ring.closed and len(self._ring) == 0:
                return

    def _admit_safely(self, batch: list[Message]) -> None:
        """Admit ``batch``; no failure may end the thread that took it, and no
        message of it may be left behind."""
        try:
            self._admit(batch)
        except Exception:
            # A bug, not a message: _admit isolates what one message can cause.
            # Whatever of the batch the worker still holds goes back to the broker.
            logger.exception("admitting %d messages failed; handing them back", len(batch))
            self._hand_back([m for m in batch if self._unsettled(m) and not self._placed(m)])

    def _admit(self, batch: list[Message]) -> None:
        now = time.time()
        due: list[Message] = []
        for message in batch:
            not_before = message.not_before
            if not_before is None:
                due.append(message)
            elif not math.isfinite(not_before):
                self._reject(message, f"its not-before {not_before!r} is not a point in time")
            elif not_before <= now + 0.001:
                due.append(message)
            else:  # an ETA or a long delay re-published by the transport: not yet
                self._defer_or_reject(message, not_before - now)
        if due and self._ordered:
            due = self._park(due)
        if due:
            self._enqueue(self._claim(due))

    def _defer_or_reject(self, message: Message, delay_s: float) -> None:
        try:
            self._defer(message, delay_s)
        except Exception as exc:  # e.g. a not-before of 1e300, which no timer holds
            self._reject(message, f"cannot delay it by {delay_s!r} s: {exc}")

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
                    self._defer_or_reject(m, 1.0)
                return []
            for (i, key), state in zip(keyed, claimed, strict=False):
                states[i] = state
                if state is _NEW:
                    self._inflight.claimed(messages[i], key)
        return list(zip(messages, states, strict=False))

    def _park(self, messages: list[Message]) -> list[Message]:
        """The messages that may run now; the others wait behind the holder of their
        ordering key. When halted, everything goes back to the broker."""
        runnable: list[Message] = []
        with self._cond:
            halted = self._halt
            for message in [] if halted else messages:
                key = message.ordering_key
                if key is None:
                    runnable.append(message)
                    continue
                owner = self._owner.get(key)
                if owner is None:
                    self._owner[key] = id(message)
                    runnable.append(message)
                elif owner == id(message):
                    runnable.append(message)  # the holder itself, back from a local retry
                else:
                    self._parked.setdefault(key, deque()).append(message)
        if halted:
            self._hand_back(messages)
        return runnable

    def _enqueue(self, items: list[Item]) -> None:
        """Make claimed messages runnable, or hand them back when halted."""
        with self._cond:
            if not self._halt:
                self._ready.extend(items)
                items = []
        if items:
            self._hand_back([m for m, _ in items])
        else:
            self._spawn()

    def _placed(self, message: Message) -> bool:
        with self._cond:
            if any(m is message for m, _ in self._ready):
                return True
            return any(m is message for parked in self._parked.values() for m in parked)

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
                    self._admit_safely(batch)
                    continue
                if self._owns is not None and not self._owns(message):
                    self._hand_back([message])  # no longer ours: settled unrun
                    continue
                # run_one settles every message, whatever happens inside it.
                self._run_one(message, claim)
        except BaseException:
            logger.exception("a worker thread's runner failed; it is replaced")
        finally:
            with self._cond:
                self._free += 1
                self._cond.notify_all()
            # Something may have been admitted while this runner was leaving and saw
            # no free slot then; now there is one.
            if self._ready and not self._halt:
                self._spawn()
