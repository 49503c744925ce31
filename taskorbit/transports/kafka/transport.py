"""Apache Kafka through confluent-kafka (librdkafka): one topic, one consumer group.

Verbs and what they do on Kafka (semantics in docs/transports/kafka.md)::

    receive     take from the consumer thread's buffer (consumer.py); the thread
                polls all the time, pausing partitions the worker has no room for
    ack         mark the offsets settled (commits.py), then commit every partition
                whose first unsettled offset moved on (one synchronous commit)
    nack        handed back unrun at delay 0 (shutdown, a revoked partition): kept
                below the commit, read again (here or by the next owner); any other
                nack (a retry, a delay): a copy to this group's retry topic for the
                delay, carrying attempt, due time and source, then settled
    dead_letter a copy to <topic>.dlq with reason, attempts, source and time, then
                settled
    publish     produce with the ordering key as record key, wait for every
                delivery report (idempotent producer, acks=all)
    owns        False once the message's partition was revoked: the dispatcher then
                hands it back without running it, and nack does nothing

A settled offset is committed only when every offset below it is settled too, so
a commit never skips a message that a slow handler still runs. Retry topics are
named per consumer group (``<topic>.retry.<group>.<delay>``): a retry reaches only
the group that handed it back, and the other groups of the topic never see it.
"""

from __future__ import annotations

import atexit
import logging
import math
import re
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from confluent_kafka import Consumer, KafkaException, TopicPartition

from taskorbit.errors import ConfigurationError, TransportError
from taskorbit.message import (
    DLQ_ATTEMPTS_ATTR,
    DLQ_REASON_ATTR,
    DLQ_TIME_ATTR,
    Message,
)
from taskorbit.transports.base import AckFailure, Transport
from taskorbit.transports.kafka.attempts import AttemptStore, default_directory
from taskorbit.transports.kafka.consumer import Counters, Inbox
from taskorbit.transports.kafka.errors import translate
from taskorbit.transports.kafka.producer import DeliveringProducer, Record
from taskorbit.transports.kafka.wire import (
    DLQ_GROUP_ATTR,
    RETRY_DUE_ATTR,
    RETRY_REASON_ATTR,
    Receipt,
    check_size,
    encode_headers,
    key_of,
    raw_headers_with,
    source_attributes,
)

__all__ = ["DEFAULT_RETRY_DELAYS", "KafkaTransport"]

log = logging.getLogger("taskorbit.transports.kafka")

#: The default retry ladder: a retry waits in the topic of the longest delay not
#: above the one asked for (1 s, 10 s, 1 min, 10 min).
DEFAULT_RETRY_DELAYS = (1.0, 10.0, 60.0, 600.0)
#: Legal Kafka topic names: ASCII letters, digits, '.', '_' and '-', up to 249.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
MAX_REASON_CHARS = 2000


class KafkaTransport(Transport):
    """Messages in one Kafka topic, consumed by one consumer group.

    >>> KafkaTransport("b1:9092,b2:9092", topic="orders", group="billing")  # doctest: +SKIP
    """

    name: ClassVar[str] = "kafka"
    durable: ClassVar[bool] = True
    acknowledges: ClassVar[bool] = True
    needs_lease: ClassVar[bool] = False  # no per-message lease; the consumer thread polls
    max_batch: ClassVar[int] = 500
    max_delay: ClassVar[float] = math.inf  # retry topics carry any delay

    def __init__(
        self,
        bootstrap_servers: str = "localhost:9092",
        *,
        topic: str = "taskorbit",
        group: str = "taskorbit",
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        retry_topic_prefix: str | None = None,
        dlq_topic: str | None = None,
        ordered: bool = True,
        max_buffered: int = 1000,
        max_unsettled: int = 10_000,
        revoke_timeout_s: float = 10.0,
        commit_interval_s: float = 0.2,
        attempts_dir: str | None = None,
        count_crashes: bool = True,
        max_message_bytes: int = 1_000_000,
        compression: str = "none",
        linger_ms: float = 5.0,
        delivery_timeout_s: float = 30.0,
        consumer_config: Mapping[str, Any] | None = None,
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        retry_delays = tuple(sorted(float(d) for d in retry_delays))
        if not retry_delays or any(not math.isfinite(d) or d < 0 for d in retry_delays):
            raise ConfigurationError(
                f"retry_delays must be one or more finite delays >= 0 s, got {retry_delays!r}"
            )
        for name, value in (("max_buffered", max_buffered), ("max_unsettled", max_unsettled)):
            if not isinstance(value, int) or value < 2:
                raise ConfigurationError(f"{name} must be an integer >= 2, got {value!r}")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.group = group
        self.retry_delays = retry_delays
        prefix = retry_topic_prefix or f"{topic}.retry.{group}"
        self.retry_topics = tuple(f"{prefix}.{_label(d)}" for d in retry_delays)
        self.dlq_topic = dlq_topic or f"{topic}.dlq"
        for name in (topic, self.dlq_topic, *self.retry_topics):
            if not _TOPIC_NAME.fullmatch(name):
                raise ConfigurationError(
                    f"{name!r} is not a legal Kafka topic name (letters, digits, '.', '_', "
                    "'-', at most 249): choose another topic or group, or pass "
                    "retry_topic_prefix= / dlq_topic="
                )
        self.ordered = ordered
        self.max_message_bytes = max_message_bytes
        self._settings = dict(
            max_buffered=max_buffered,
            max_unsettled=max_unsettled,
            revoke_timeout_s=revoke_timeout_s,
            commit_interval_s=commit_interval_s,
        )
        directory = None
        if count_crashes:
            directory = (
                Path(attempts_dir) if attempts_dir else default_directory(bootstrap_servers, group)
            )
        self._attempts_dir = directory
        self._consumer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            # Prefetch little: the transport keeps its own bounded buffer.
            "queued.min.messages": 1000,
            "queued.max.messages.kbytes": 16384,
            **(consumer_config or {}),
        }
        self._producer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "compression.type": compression,
            "message.max.bytes": max(max_message_bytes + 1024, 1_000_000),
            **(producer_config or {}),
        }
        self._delivery_timeout_s = delivery_timeout_s
        self._lock = threading.Lock()
        self._inbox: Inbox | None = None
        self._producer: DeliveringProducer | None = None
        self._closed = False
        _close_at_exit(self)

    # -- names -----------------------------------------------------------------------

    def topics(self) -> list[str]:
        """Every topic this transport uses: create them where auto-creation is off."""
        return [self.topic, *self.retry_topics, self.dlq_topic]

    def retry_topic_for(self, delay: float) -> str:
        """The ladder's topic for ``delay``: the longest rung not above it (the
        shortest rung for shorter delays), so a copy never waits behind much longer
        ones. Its due time, not the rung, decides when it runs."""
        chosen = self.retry_topics[0]
        for rung, name in zip(self.retry_delays, self.retry_topics, strict=True):
            if rung <= delay:
                chosen = name
        return chosen

    @property
    def counters(self) -> Counters:
        """Rebalances, partitions assigned / revoked, messages handed over, commits."""
        return self._inbox.counters if self._inbox is not None else Counters()

    # -- receive ---------------------------------------------------------------------

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        if max_messages <= 0:
            return []
        return self._consumer().take(max_messages, timeout)

    def subscribe(self) -> None:
        """Join the consumer group now rather than at the first ``receive``."""
        self._consumer()

    def owns(self, message: Message) -> bool:
        inbox = self._inbox
        return inbox is None or inbox.owns(message)

    # -- settle ----------------------------------------------------------------------

    def ack(self, messages: Sequence[Message]) -> list[AckFailure]:
        inbox = self._consumer()
        inbox.settle(messages)
        try:
            inbox.commit()
        except TransportError as error:
            # Settled all the same: the consumer thread commits again shortly.
            log.warning("commit failed (%s); retrying within %.1f s", error, 0.2)
        return []

    def nack(self, messages: Sequence[Message], delay: float = 0.0) -> None:
        inbox = self._consumer()
        in_place: list[Message] = []
        copies: list[Message] = []
        for message in messages:
            if inbox.state_of(message) is None:
                continue  # its partition has a new owner, who reads it from the commit
            if delay <= 0 and message.attempt == message.receipt.delivered_attempt:
                in_place.append(message)  # handed back unrun: keep it below the commit
            else:
                copies.append(message)
        if in_place:
            inbox.release(in_place)
        if not copies:
            return
        now = time.time()
        try:
            self._producer_().send([self._retry_copy(m, delay, now) for m in copies], "retry")
        except TransportError as error:
            # Not lost: kept below the commit and offered again after the delay.
            log.warning("retry copies failed (%s); offering them again in place", error)
            inbox.release(copies, due=time.monotonic() + max(delay, 1.0))
            raise
        inbox.settle(copies)

    def _retry_copy(self, message: Message, delay: float, now: float) -> Record:
        receipt: Receipt = message.receipt
        due = max(now + max(delay, 0.0), message.not_before or 0.0)
        extra = {
            RETRY_DUE_ATTR: repr(due),
            RETRY_REASON_ATTR: "retry"
            if message.attempt > receipt.delivered_attempt
            else "hand-back",
            **source_attributes(message),
        }
        topic = self.retry_topic_for(delay)
        if receipt.raw_headers is not None:  # malformed: keep what arrived
            headers = raw_headers_with(receipt.raw_headers, extra)
        else:
            copy = Message(
                message.topic,
                message.body,
                message.attributes,
                not_before=due if due > now else message.not_before,
            )
            headers = encode_headers(copy, attempt=message.attempt, extra=extra)
        value = None if receipt.null_value else message.body
        return (topic, key_of(message.ordering_key), value, headers)

    def dead_letter(self, message: Message, reason: str) -> None:
        inbox = self._consumer()
        if inbox.state_of(message) is None:
            return  # its partition has a new owner, who reads it from the commit
        receipt: Receipt = message.receipt
        extra = {
            DLQ_REASON_ATTR: reason[:MAX_REASON_CHARS],
            DLQ_ATTEMPTS_ATTR: str(message.attempt),
            DLQ_TIME_ATTR: repr(time.time()),
            DLQ_GROUP_ATTR: self.group,
            **source_attributes(message),
        }
        if receipt.raw_headers is not None:  # malformed: keep what arrived (promise 4)
            headers = raw_headers_with(receipt.raw_headers, extra)
        else:
            headers = encode_headers(message, extra=extra)
        value = None if receipt.null_value else message.body
        # The copy is confirmed before the original is settled and committed past.
        self._producer_().send(
            [(self.dlq_topic, key_of(message.ordering_key), value, headers)], "dead letter"
        )
        inbox.settle([message])

    # -- publish ---------------------------------------------------------------------

    def publish(self, messages: Sequence[Message]) -> list[str]:
        records: list[Record] = []
        for message in messages:
            headers = encode_headers(message)
            key = key_of(message.ordering_key)
            # All checked before any is sent: a batch is refused whole at the door.
            check_size(self.topic, message.body, key, headers, self.max_message_bytes)
            records.append((self.topic, key, message.body, headers))
        where = self._producer_().send(records, "publish")
        return [f"{self.topic}:{partition}:{offset}" for partition, offset in where]

    # -- for tests and operators -----------------------------------------------------

    def assignment(self) -> list[tuple[str, int]]:
        """The partitions this worker owns now (empty before its first receive)."""
        return self._inbox.assignment() if self._inbox is not None else []

    def committed(
        self, partitions: Sequence[tuple[str, int]], timeout: float = 10.0
    ) -> dict[tuple[str, int], int]:
        """The group's committed offsets for ``partitions``, asked of the broker
        (negative: none yet). A consumer of its own that never joins the group: the
        running one's ``committed()`` blocks while its thread polls."""
        probe = Consumer({**self._consumer_config, "enable.auto.commit": False})
        try:
            found = probe.committed([TopicPartition(t, p) for t, p in partitions], timeout)
        except KafkaException as error:
            raise translate(error, "committed offsets") from error
        finally:
            probe.close()
        return {(tp.topic, tp.partition): tp.offset for tp in found}

    def buffered(self) -> int:
        """Messages polled and waiting in the local buffer."""
        return len(self._inbox) if self._inbox is not None else 0

    # -- plumbing --------------------------------------------------------------------

    def _consumer(self) -> Inbox:
        inbox = self._inbox
        if inbox is not None:
            return inbox
        with self._lock:
            if self._closed:
                raise TransportError("this KafkaTransport is closed")
            if self._inbox is None:
                inbox = Inbox(
                    self._consumer_config,
                    topics=[self.topic, *self.retry_topics],
                    retry_topics=frozenset(self.retry_topics),
                    default_topic=self.topic,
                    attempts=AttemptStore(self._attempts_dir),
                    **self._settings,  # type: ignore[arg-type]
                )
                inbox.start()
                self._inbox = inbox
            return self._inbox

    def _producer_(self) -> DeliveringProducer:
        producer = self._producer
        if producer is not None:
            return producer
        with self._lock:
            if self._producer is None:
                self._producer = DeliveringProducer(
                    self._producer_config, delivery_timeout_s=self._delivery_timeout_s
                )
            return self._producer

    def close(self) -> None:
        """Commit what is settled, leave the group, flush the producer. Idempotent;
        also run at interpreter exit, since ``Orbit.stop`` leaves transports open."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            inbox, producer = self._inbox, self._producer
        if inbox is not None:
            inbox.stop(timeout=30.0)
        if producer is not None:
            try:
                producer.close()
            except TransportError as error:
                log.warning("closing the kafka producer: %s", error)

    def __repr__(self) -> str:
        return (
            f"KafkaTransport({self.bootstrap_servers!r}, topic={self.topic!r}, "
            f"group={self.group!r})"
        )


def _label(delay: float) -> str:
    """``1s``, ``10s``, ``500ms``: a rung's suffix in its topic name."""
    if delay == int(delay):
        return f"{int(delay)}s"
    return f"{round(delay * 1000)}ms"


def _close_at_exit(transport: KafkaTransport) -> None:
    """Close at interpreter exit, without keeping the transport alive until then."""
    ref = weakref.ref(transport)

    def close() -> None:
        alive = ref()
        if alive is not None:
            alive.close()

    atexit.register(close)
