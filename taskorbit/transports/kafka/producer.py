"""One idempotent producer per transport, and waiting for delivery reports.

``publish`` returns only after Kafka confirmed every record (acks=all), so a record
that ``publish`` returned for is in the log; retry and dead-letter copies are
confirmed the same way before their original is settled (copy first, then commit:
a crash in between leaves a duplicate, never a loss).

Delivery reports are callbacks that librdkafka runs inside ``Producer.poll``. Several
threads publish at once (handlers, the settler, the DLQ), so each call collects its
own reports in a :class:`_Batch` and polls until that batch is complete; a poll on
one thread may serve another thread's reports, which then finds its batch done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Producer

from taskorbit.errors import TransportConnectionError, TransportError
from taskorbit.transports.kafka.errors import translate

#: (topic, key, value, headers) of one record to send.
Record = tuple[str, bytes | None, bytes | None, Sequence[tuple[str, Any]]]


class _Batch:
    __slots__ = ("error", "event", "left", "lock", "where")

    def __init__(self, size: int) -> None:
        self.left = size
        self.where: list[tuple[int, int]] = [(-1, -1)] * size  # (partition, offset)
        self.error: KafkaError | None = None
        self.lock = threading.Lock()
        self.event = threading.Event()
        if size == 0:
            self.event.set()

    def report(self, index: int, error: KafkaError | None, record: Any) -> None:
        with self.lock:
            if error is not None:
                self.error = self.error or error
            else:
                self.where[index] = (record.partition(), record.offset())
            self.left -= 1
            if self.left == 0:
                self.event.set()


class DeliveringProducer:
    def __init__(self, config: dict[str, Any], *, delivery_timeout_s: float) -> None:
        self._producer = Producer(config)
        self._timeout_s = delivery_timeout_s

    def send(self, records: Sequence[Record], what: str) -> list[tuple[int, int]]:
        """Produce ``records`` and wait for all their delivery reports; return
        (partition, offset) of each. Raises TransportError with Kafka's reason."""
        batch = _Batch(len(records))
        producer = self._producer
        for index, (topic, key, value, headers) in enumerate(records):

            def report(error: KafkaError | None, record: Any, _i: int = index) -> None:
                batch.report(_i, error, record)

            while True:
                try:
                    producer.produce(
                        topic, value, key, headers=cast(Any, headers), on_delivery=report
                    )
                    break
                except BufferError:
                    producer.poll(0.05)  # the local queue is full: let reports drain it
                except KafkaException as error:
                    raise translate(error, f"{what}: producing to {topic}") from error
        deadline = time.monotonic() + self._timeout_s
        while not batch.event.is_set():
            if time.monotonic() > deadline:
                raise TransportConnectionError(
                    f"{what}: {batch.left} of {len(records)} records not confirmed by Kafka "
                    f"within {self._timeout_s:.0f} s (delivery_timeout_s)"
                )
            producer.poll(0.005)
        if batch.error is not None:
            raise translate(batch.error, what)
        return batch.where

    def flush(self, timeout: float) -> int:
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 10.0) -> None:
        left = self.flush(timeout)
        closer = getattr(self._producer, "close", None)  # confluent-kafka >= 2.11
        if closer is not None:
            closer()
        if left:
            raise TransportError(f"{left} records were still unconfirmed when the producer closed")
