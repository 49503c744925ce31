"""The consumer thread: polls Kafka on its own, so backpressure never costs a rebalance.

The runtime's poller calls ``receive(n)`` only while the worker's ring has room.
A Kafka consumer that is not polled for ``max.poll.interval.ms`` is thrown out of
its group, so the poll cannot wait for the ring: this thread
(``taskorbit-kafka-consumer``) polls all the time into a bounded local buffer, and
``receive`` takes from that buffer. When the buffer is full, or a partition has
``max_unsettled`` messages handed out and not settled, the thread ``pause()``s the
partitions concerned and keeps polling (heartbeats, rebalances, nothing fetched);
it ``resume()``s them when room returns. A handler may run for hours.

Retry partitions (``<topic>.retry.<group>.<delay>``) hold copies that are due at a
time (``taskorbit-retry-due``). A copy not yet due pauses only its own partition; it
waits here (with what was fetched behind it) until due, then goes to the buffer, and
the partition resumes. No busy loop, no re-publishing while waiting.

Rebalances (callbacks run on this thread, inside ``consume``):

- **revoke**: the partition's messages stop being this worker's to start
  (``owns`` turns False, and the dispatcher hands such a message back unrun); its
  buffered messages are dropped; the thread waits up to ``revoke_timeout_s`` for
  the messages already with the worker to settle, commits what is settled, and lets
  the partition go. Everything not settled is read again by the next owner from
  that commit.
- **assign**: a new generation of the partition starts at its committed offset.
- **lost** (the group expelled us): as revoke, without waiting or committing.

Everything shared with the poller and the settling threads is guarded by
``Inbox.lock`` (a Condition): the buffer, the partition states and their trackers.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from taskorbit.errors import TransportError
from taskorbit.message import Message
from taskorbit.transports.kafka.attempts import AttemptStore, PartitionAttempts
from taskorbit.transports.kafka.commits import PartitionTracker
from taskorbit.transports.kafka.errors import describe, translate
from taskorbit.transports.kafka.wire import (
    Receipt,
    message_id,
    ordering_key_of,
    read_headers,
)

log = logging.getLogger("taskorbit.transports.kafka")

TP = tuple[str, int]

#: Longest wait inside one ``consume``: how soon a drained buffer resumes partitions.
POLL_S = 0.05
#: How long a full buffer waits for room before its partitions are paused.
STALL_S = 1.0
#: Records taken from librdkafka per ``consume`` call.
CONSUME_BATCH = 500


@dataclass
class PartitionState:
    """One assigned partition, for one generation of its assignment."""

    tp: TP
    generation: int
    retry: bool  # a retry-topic partition: records wait for their due time
    attempts: PartitionAttempts
    tracker: PartitionTracker = field(default_factory=PartitionTracker)
    held: deque[Message] = field(default_factory=deque)  # not yet due (retry partitions)
    paused: set[str] = field(default_factory=set)  # why: "buffer", "unsettled", "due"
    revoking: bool = False


@dataclass
class Counters:
    """What the consumer did, for logs, tests and ``KafkaTransport.counters``."""

    rebalances: int = 0
    assigned: int = 0
    revoked: int = 0
    lost: int = 0
    dropped_on_revoke: int = 0  # buffered, never handed to the worker
    unsettled_on_revoke: int = 0  # still with the worker when the wait ended
    commits: int = 0
    commit_failures: int = 0
    pauses: int = 0


class Inbox:
    """The buffer between the consumer thread and ``receive``, and the partitions'
    commit trackers. See the module docstring."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        topics: Sequence[str],
        retry_topics: frozenset[str],
        default_topic: str,
        attempts: AttemptStore,
        max_buffered: int,
        max_unsettled: int,
        revoke_timeout_s: float,
        commit_interval_s: float,
    ) -> None:
        self.lock = threading.Condition()
        self.counters = Counters()
        self._consumer = Consumer(config)
        self._topics = list(topics)
        self._retry_topics = retry_topics
        self._default_topic = default_topic
        self._attempts = attempts
        self._max_buffered = max_buffered
        self._max_unsettled = max_unsettled
        self._revoke_timeout_s = revoke_timeout_s
        self._commit_interval_s = commit_interval_s
        self._generations = itertools.count(1)
        # All guarded by self.lock:
        self._buffer: deque[Message] = deque()
        self._parts: dict[TP, PartitionState] = {}
        self._later: list[tuple[float, int, Message]] = []  # released with a delay
        self._later_seq = itertools.count()
        # Serialises commits, so that a late commit never moves a position back.
        self._commit_lock = threading.Lock()
        self._last_commit = 0.0
        self._stopping = threading.Event()
        self._closing = False
        self._thread = threading.Thread(
            target=self._run, name="taskorbit-kafka-consumer", daemon=True
        )
        self.started = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self.started = True
        self.missing_topics(timeout=10.0)
        self._consumer.subscribe(
            self._topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._thread.start()

    def missing_topics(self, timeout: float) -> list[str]:
        """Ask the cluster for each topic this consumer reads, by name: that creates
        it where auto-creation is on (``allow.auto.create.topics``), and otherwise
        reports it missing (logged: subscribing to a missing topic only warns)."""
        missing = []
        for topic in self._topics:
            try:
                found = self._consumer.list_topics(topic=topic, timeout=timeout).topics.get(topic)
            except KafkaException as error:
                raise translate(error, f"metadata for {topic}") from error
            if found is None or found.error is not None:
                missing.append(topic)
        if missing:
            log.warning(
                "kafka topics missing: %s; create them (KafkaTransport.topics() lists every "
                "topic the transport uses) or retries will fail",
                ", ".join(missing),
            )
        return missing

    def stop(self, timeout: float) -> None:
        """Commit what is settled, leave the group, close the consumer."""
        self._stopping.set()
        with self.lock:
            self.lock.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # -- what receive and the settling verbs call -----------------------------------

    def take(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to ``max_messages`` buffered messages, waiting up to ``timeout`` for one.
        Each is opened in its partition's tracker, and how far each partition has
        been handed out is written down before they are returned."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not self._buffer and not self._stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self.lock.wait(remaining)
            batch: list[Message] = []
            highest: dict[TP, tuple[PartitionState, int]] = {}
            buffer, parts = self._buffer, self._parts
            while buffer and len(batch) < max_messages:
                message = buffer.popleft()
                receipt: Receipt = message.receipt
                tp = (receipt.topic, receipt.partition)
                state = parts.get(tp)
                if state is None or state.generation != receipt.generation or state.revoking:
                    continue  # its partition went to another consumer meanwhile
                state.tracker.hand_out(receipt.offset)
                batch.append(message)
                seen = highest.get(tp)
                if seen is None or receipt.offset > seen[1]:
                    highest[tp] = (state, receipt.offset)
            for state, offset in highest.values():
                state.attempts.delivered_through(offset + 1)
            if batch and len(self._buffer) < self._max_buffered:
                self.lock.notify_all()  # a consumer thread waiting for room
        now = time.monotonic()
        for message in batch:
            message.received_at = now
        return batch

    def owns(self, message: Message) -> bool:
        receipt = message.receipt
        if not isinstance(receipt, Receipt):
            return True
        state = self._parts.get((receipt.topic, receipt.partition))
        return state is not None and state.generation == receipt.generation and not state.revoking

    def state_of(self, message: Message) -> PartitionState | None:
        """The partition state ``message`` belongs to, while this worker still
        answers for it (owned, or being revoked and waited for)."""
        receipt = message.receipt
        state = self._parts.get((receipt.topic, receipt.partition))
        if state is None or state.generation != receipt.generation:
            return None
        return state

    def settle(self, messages: Iterable[Message]) -> None:
        with self.lock:
            for message in messages:
                state = self.state_of(message)
                if state is not None:
                    state.tracker.settle(message.receipt.offset)
            self.lock.notify_all()

    def release(self, messages: Iterable[Message], due: float | None = None) -> None:
        """Handed back without being settled: the commit stays below them. While the
        partition is still this worker's, each comes back through ``receive`` (at
        once, or at ``due`` on the monotonic clock); otherwise its next owner reads
        it from the commit."""
        with self.lock:
            back: list[Message] = []
            for message in messages:
                state = self.state_of(message)
                if state is None or not state.tracker.release(message.receipt.offset):
                    continue
                if state.revoking or self._stopping.is_set():
                    continue
                again = _fresh(message)
                if due is None:
                    back.append(again)
                else:
                    heapq.heappush(self._later, (due, next(self._later_seq), again))
            self._buffer.extendleft(reversed(back))
            self.lock.notify_all()

    def commit(self, tps: Iterable[TP] | None = None) -> None:
        """Commit every partition (or those of ``tps``) whose settled position moved
        on; synchronous. Raises TransportError when the call itself failed."""
        with self._commit_lock:
            with self.lock:
                wanted = self._parts if tps is None else {tp: self._parts[tp] for tp in tps}
                offsets = [
                    TopicPartition(tp[0], tp[1], state.tracker.position)  # type: ignore[arg-type]
                    for tp, state in wanted.items()
                    if state.tracker.dirty
                ]
            if not offsets:
                return
            self._last_commit = time.monotonic()
            try:
                done = self._consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as error:
                self.counters.commit_failures += 1
                raise translate(error, f"commit of {len(offsets)} partitions") from error
            self.counters.commits += 1
            with self.lock:
                for tp in done:
                    state = self._parts.get((tp.topic, tp.partition))
                    if tp.error is not None:
                        self.counters.commit_failures += 1
                        log.warning("commit of %s[%d] failed: %s", tp.topic, tp.partition, tp.error)
                    elif state is not None:
                        committed = state.tracker.committed
                        if committed is None or tp.offset > committed:
                            state.tracker.committed = tp.offset

    def assignment(self) -> list[TP]:
        with self.lock:
            return [tp for tp, state in self._parts.items() if not state.revoking]

    def __len__(self) -> int:
        return len(self._buffer)

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._wait_for_room()
                records = self._consumer.consume(CONSUME_BATCH, self._wait_s())
                if records:
                    self._take(records)
                self._release_due()
                self._flow()
                if time.monotonic() - self._last_commit >= self._commit_interval_s:
                    self.commit()
                failures = 0
            except Exception as error:  # the thread must not die: log, back off, go on
                failures += 1
                pause = min(0.1 * 2**failures, 5.0)
                if isinstance(error, TransportError):
                    log.warning("kafka consumer: %s; retrying in %.1f s", error, pause)
                else:
                    log.exception("kafka consumer failed; retrying in %.1f s", pause)
                self._stopping.wait(pause)
        self._finish()

    def _wait_s(self) -> float:
        now_wall, now = time.time(), time.monotonic()
        wait = POLL_S
        with self.lock:
            if self._later:
                wait = min(wait, self._later[0][0] - now)
            for state in self._parts.values():
                if state.held:
                    wait = min(wait, (state.held[0].receipt.due or now_wall) - now_wall)
        return max(0.0, wait)

    def _take(self, records: list[Any]) -> None:
        ready: list[Message] = []
        now = time.time()
        with self.lock:
            parts = self._parts
            for record in records:
                error = record.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("kafka consumer: %s", describe(error))
                    continue
                tp = (record.topic(), record.partition())
                state = parts.get(tp)
                if state is None or state.revoking:
                    continue  # fetched just before its partition was revoked
                message = self._message(record, state)
                due = message.receipt.due
                if state.retry and (state.held or (due is not None and due > now)):
                    state.held.append(message)
                    self._pause(state, "due")
                else:
                    ready.append(message)
            if ready:
                self._buffer.extend(ready)
                self.lock.notify_all()

    def _message(self, record: Any, state: PartitionState) -> Message:
        value = record.value()
        envelope = read_headers(record.headers(), value is not None)
        offset = record.offset()
        attempt = envelope.attempt + state.attempts.crashes_before(offset)
        topic, partition = state.tp
        receipt = Receipt(
            topic,
            partition,
            offset,
            state.generation,
            attempt,
            record.headers() if envelope.malformed is not None else None,
            value is None,
            envelope.due,
        )
        message = Message(
            envelope.topic or self._default_topic,
            value if value is not None else b"",
            envelope.attributes,
            message_id(topic, partition, offset, envelope.attributes),
            attempt,
            receipt,
            ordering_key_of(record.key()),
            envelope.not_before,
            0.0,
            envelope.malformed,
        )
        return message

    def _release_due(self) -> None:
        now_wall, now = time.time(), time.monotonic()
        with self.lock:
            moved = False
            while self._later and self._later[0][0] <= now:
                self._buffer.appendleft(heapq.heappop(self._later)[2])
                moved = True
            for state in self._parts.values():
                if not state.held:
                    continue
                while state.held and (state.held[0].receipt.due or 0.0) <= now_wall:
                    self._buffer.append(state.held.popleft())
                    moved = True
                if not state.held:
                    self._resume(state, "due")
            if moved:
                self.lock.notify_all()

    def _wait_for_room(self) -> None:
        """A full buffer first waits (up to STALL_S) for the worker to take some,
        without consuming: ``pause()`` throws away what librdkafka prefetched and
        ``resume()`` fetches it again, which at every full buffer cost 95 % of the
        throughput. Only a buffer still full after that (slow handlers) pauses every
        partition, so that the thread can go back to polling (heartbeats,
        rebalances, ``max.poll.interval.ms``) without fetching."""
        with self.lock:
            if len(self._buffer) < self._max_buffered:
                return
            deadline = time.monotonic() + STALL_S
            while len(self._buffer) >= self._max_buffered and not self._stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    for state in self._parts.values():
                        self._pause(state, "buffer")
                    return
                self.lock.wait(remaining)

    def _flow(self) -> None:
        """Resume what the worker can take again; pause partitions with too many
        unsettled messages."""
        with self.lock:
            roomy = len(self._buffer) <= self._max_buffered // 2
            for state in self._parts.values():
                if roomy:
                    self._resume(state, "buffer")
                unsettled = state.tracker.unsettled
                if unsettled >= self._max_unsettled:
                    self._pause(state, "unsettled")
                elif unsettled <= self._max_unsettled // 2:
                    self._resume(state, "unsettled")

    def _pause(self, state: PartitionState, reason: str) -> None:
        if reason in state.paused:
            return
        if not state.paused:
            self._consumer.pause([TopicPartition(*state.tp)])
            self.counters.pauses += 1
        state.paused.add(reason)

    def _resume(self, state: PartitionState, reason: str) -> None:
        if reason not in state.paused:
            return
        state.paused.discard(reason)
        if not state.paused:
            self._consumer.resume([TopicPartition(*state.tp)])

    def _finish(self) -> None:
        """Leaving: commit what is settled, close the attempt records, leave the group."""
        try:
            self.commit()
        except TransportError as error:
            log.warning("final commit failed (%s); the next owner repeats what it held", error)
        with self.lock:
            states = list(self._parts.values())
            self._parts.clear()
            self._buffer.clear()
            self._later.clear()
            self._closing = True
        for state in states:
            _let_go(state)
        try:
            self._consumer.close()
        except Exception as error:  # a consumer that cannot leave is expelled later
            log.warning("closing the kafka consumer failed: %s", error)

    # -- rebalance callbacks (on this thread, inside consume) --------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self.lock:
            self.counters.rebalances += 1
            self.counters.assigned += len(partitions)
            for tp in partitions:
                key = (tp.topic, tp.partition)
                self._parts[key] = PartitionState(
                    key,
                    next(self._generations),
                    tp.topic in self._retry_topics,
                    self._attempts.open(tp.topic, tp.partition),
                )
        if partitions:
            log.info("assigned %s", _names(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._hand_over(partitions, lost=False)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._hand_over(partitions, lost=True)

    def _hand_over(self, partitions: list[TopicPartition], *, lost: bool) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        with self.lock:
            if self._closing or not keys:
                return
            self.counters.rebalances += 1
            states = [self._parts[k] for k in keys if k in self._parts]
            for state in states:
                state.revoking = True
                state.held.clear()
            revoked = set(keys)
            kept = deque(m for m in self._buffer if _tp(m) not in revoked)
            dropped = len(self._buffer) - len(kept)
            self._buffer = kept
            self._later = [x for x in self._later if _tp(x[2]) not in revoked]
            heapq.heapify(self._later)
            # Wait (bounded) for what the worker holds to settle or come back unrun.
            deadline = time.monotonic() + (0.0 if lost else self._revoke_timeout_s)
            while any(s.tracker.out for s in states) and time.monotonic() < deadline:
                self.lock.wait(deadline - time.monotonic())
            running = sum(s.tracker.out for s in states)
        if not lost:
            try:
                self.commit([s.tp for s in states])
            except TransportError as error:
                log.warning("commit on revoke failed (%s); the next owner repeats more", error)
        with self.lock:
            for state in states:
                self._parts.pop(state.tp, None)
            if lost:
                self.counters.lost += len(states)
            else:
                self.counters.revoked += len(states)
            self.counters.dropped_on_revoke += dropped
            self.counters.unsettled_on_revoke += running
        for state in states:
            _let_go(state)
        log.info(
            "%s %s: committed %s; %d buffered messages dropped (the next owner reads them), "
            "%d still with the worker after %.1f s (they run again on the next owner)",
            "lost" if lost else "revoked",
            _names(partitions),
            {f"{s.tp[0]}[{s.tp[1]}]": s.tracker.committed for s in states},
            dropped,
            running,
            0.0 if lost else self._revoke_timeout_s,
        )


def _let_go(state: PartitionState) -> None:
    tracker = state.tracker
    state.attempts.finish(
        clean=tracker.out == 0, position=tracker.committed, still_out=tracker.highest_out
    )


def _fresh(message: Message) -> Message:
    """A new Message object for a redelivery of ``message`` (the runtime keys its
    bookkeeping by identity, and the old object has been settled)."""
    return Message(
        message.topic,
        message.body,
        message.attributes,
        message.id,
        message.attempt,
        message.receipt,
        message.ordering_key,
        message.not_before,
        0.0,
        message.malformed,
    )


def _tp(message: Message) -> TP:
    receipt: Receipt = message.receipt
    return (receipt.topic, receipt.partition)


def _names(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions)
