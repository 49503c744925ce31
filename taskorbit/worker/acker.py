"""Batched acknowledgements: many deletes per broker call, flushed within a bound.

Handlers finish one at a time on many threads; the broker wants deletes in
batches (SQS DeleteMessageBatch of 10, one XACK, one Pub/Sub acknowledge). The
acker collects finished messages and one thread, ``taskorbit-acker``, flushes them
``flush_interval_s`` after the first one of a batch arrived.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from taskorbit.errors import TransportError
from taskorbit.hooks import HookSet
from taskorbit.message import Message
from taskorbit.transports.base import Transport
from taskorbit.worker.stats import Stats

logger = logging.getLogger("taskorbit.worker.acker")

MAX_ACK_TRIES = 5


class Acker:
    def __init__(
        self,
        transport: Transport,
        hooks: HookSet,
        stats: Stats,
        *,
        on_settled: Callable[[list[Message]], None],
        flush_interval_s: float = 0.05,
    ) -> None:
        self._transport = transport
        self._hooks = hooks
        self._stats = stats
        self._on_settled = on_settled  # the lease keeper forgets them
        self._interval = flush_interval_s
        # Appended by handler threads and emptied by the acker thread; deque appends
        # and pops are atomic, so the hot path takes no lock.
        self._pending: deque[Message] = deque()
        self._armed = False  # a wake-up is on its way; cleared by the acker thread
        self._wake = threading.Event()
        self._stopping = False
        self._stopped = False  # the thread is gone: add() flushes by itself
        self._tries: dict[int, int] = {}  # id(message) -> failed attempts; acker thread only
        self._thread = threading.Thread(target=self._loop, name="taskorbit-acker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, message: Message) -> None:
        self._pending.append(message)
        if self._stopped:
            # A handler that finished after the shutdown deadline: no thread will
            # flush for it any more, so it acks itself. stop() sets _stopped before
            # its last flush, so every message is flushed by one of the two.
            self._flush_pending()
            return
        # One wake-up per batch, not per message. The acker clears _armed before it
        # looks at the deque, so a message appended meanwhile is either seen by that
        # look or arms a new wake-up here.
        if not self._armed:
            self._armed = True
            self._wake.set()

    def stop(self) -> None:
        """Flush everything pending and stop the thread."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self._stopped = True
        self._flush_pending()

    def _loop(self) -> None:
        while not self._stopping:
            self._wake.wait()
            if not self._stopping:
                # Give the batch a bounded time to fill.
                time.sleep(self._interval)
            self._wake.clear()
            self._armed = False
            # One batch per wake-up: what arrives during this flush waits for the
            # next interval and goes out as one call, not as a trickle of small ones.
            self._flush_batch()

    def _flush_batch(self) -> None:
        pending = self._pending
        if pending:
            self._flush([pending.popleft() for _ in range(len(pending))])

    def _flush_pending(self) -> None:
        while self._pending:
            self._flush_batch()

    def _flush(self, batch: list[Message]) -> None:
        try:
            failures = self._transport.ack(batch)
        except Exception as exc:  # a broker outage or a transport bug must not kill the acker
            if isinstance(exc, TransportError):
                logger.warning("ack of %d messages failed, will retry: %s", len(batch), exc)
            else:
                logger.exception("ack of %d messages raised", len(batch))
            self._stats.add("errors")
            self._hooks.fire("on_error", None, exc)
            self._retry_later(batch, str(exc))
            return
        if not failures:
            if self._tries:
                for message in batch:
                    self._tries.pop(id(message), None)
            self._on_settled(batch)
            return
        failed_ids = {id(f.message) for f in failures}
        self._on_settled([m for m in batch if id(m) not in failed_ids])
        self._stats.add("ack_failures", len(failures))
        for failure in failures:
            logger.warning("broker refused ack of %s: %s", failure.message.id, failure.reason)
            self._stats.add("errors")
            self._hooks.fire("on_error", failure.message, TransportError(failure.reason))
        self._on_settled([f.message for f in failures if not f.retryable])
        retryable = [f.message for f in failures if f.retryable]
        if retryable:
            self._retry_later(retryable, "partial batch failure")

    def _retry_later(self, batch: list[Message], reason: str) -> None:
        keep: list[Message] = []
        for message in batch:
            tries = self._tries.get(id(message), 0) + 1
            if tries >= MAX_ACK_TRIES:
                # The broker will redeliver it after its lease; the handler ran, so
                # an idempotency store (if any) turns the redelivery into an ack.
                logger.error("giving up acking %s after %d tries: %s", message.id, tries, reason)
                self._tries.pop(id(message), None)
                self._on_settled([message])
            else:
                self._tries[id(message)] = tries
                keep.append(message)
        if keep and not self._stopping:
            time.sleep(min(0.05 * 2 ** max(self._tries[id(m)] for m in keep), 2.0))
            self._pending.extendleft(reversed(keep))
            # Wake the loop again: without this the retry would wait for the next
            # handler to finish, and forever on a worker that has gone idle.
            self._armed = True
            self._wake.set()
        elif keep:
            logger.error("stopping with %d unacked messages; the broker redelivers them", len(keep))
