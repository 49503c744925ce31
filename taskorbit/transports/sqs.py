"""Amazon SQS (standard and FIFO queues) through boto3.

Every verb maps to a batch call of at most 10 entries: ReceiveMessage (long poll),
DeleteMessageBatch (ack), ChangeMessageVisibilityBatch (extend, nack), and
SendMessageBatch (publish, long delays). docs/transports/sqs.md explains the
semantics, the IAM permissions and the limits.

Delays. SQS carries a delay natively in two ways: a received message's visibility
(up to 12 h after it was received) and a new message's DelaySeconds (up to 15 min;
standard queues only). A longer delay is carried by re-sending a copy with the
``taskorbit-not-before`` attribute and the attempts used so far, then deleting the
original (copy first, so nothing is lost); when the copy arrives early the runtime
delays it again. A message that is only being held until its not-before time on a
standard queue is always re-sent that way, so that waiting never uses up attempts.

Attempts. ``attempt`` is ApproximateReceiveCount plus what a re-sent copy carried,
so max_retries holds across crashes, restarts and pods.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from taskorbit.errors import ConfigurationError, TransportError
from taskorbit.message import DEFAULT_IDEMPOTENCY_ATTR, Message

try:
    from taskorbit.transports._sqs_client import (
        change_visibility,
        chunks,
        new_client,
        send_batches,
    )
    from taskorbit.transports._sqs_errors import translated
except ModuleNotFoundError as e:  # pragma: no cover - depends on the environment
    if e.name not in ("boto3", "botocore"):
        raise
    raise ImportError("SQSTransport needs boto3: pip install 'taskorbit[sqs]'") from e
from taskorbit.transports._sqs_wire import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_BATCH,
    MAX_DELAY_SECONDS,
    MAX_VISIBILITY_S,
    check_count,
    check_size,
    dead_letter_attributes,
    deduplication_id,
    message_from_sqs,
    outgoing_attributes,
    wire_attributes,
    wire_size,
)
from taskorbit.transports.base import AckFailure, Transport

log = logging.getLogger("taskorbit.transports.sqs")

_SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"]


def _seconds(value: float) -> int:
    """SQS counts whole seconds; round up so that nothing happens early."""
    return max(0, math.ceil(value - 1e-9))


def _held_s(message: Message, now: float) -> float:
    """Seconds since SQS handed ``message`` out (0 for one built by hand)."""
    return now - message.received_at if message.received_at else 0.0


class SQSTransport(Transport):
    """One SQS queue, standard or FIFO (auto-detected from a ``.fifo`` URL).

    Example::

        SQSTransport(queue_name="orders", region_name="eu-west-1",
                     dlq_url="https://sqs.eu-west-1.amazonaws.com/123456789012/orders-dlq")
    """

    name = "sqs"
    durable = True
    needs_lease = True
    max_batch = MAX_BATCH
    max_delay = float(MAX_VISIBILITY_S)

    def __init__(
        self,
        queue_url: str | None = None,
        *,
        queue_name: str | None = None,
        dlq_url: str | None = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        client: Any = None,
        visibility_timeout: float = 30.0,
        wait_time_s: float = 20.0,
        pollers: int = 1,
        max_delay_native: float = float(MAX_VISIBILITY_S),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        default_topic: str = "",
        idempotency_attr: str = DEFAULT_IDEMPOTENCY_ATTR,
    ) -> None:
        if (queue_url is None) == (queue_name is None):
            raise ConfigurationError("pass exactly one of queue_url= or queue_name=")
        if not 1 <= visibility_timeout <= MAX_VISIBILITY_S:
            raise ConfigurationError("visibility_timeout must be between 1 and 43200 seconds")
        if not 0 <= wait_time_s <= 20:
            raise ConfigurationError("wait_time_s must be between 0 and 20 seconds (SQS's cap)")
        if pollers < 1:
            raise ConfigurationError("pollers must be greater than 0")
        if not 1 <= max_delay_native <= MAX_VISIBILITY_S:
            raise ConfigurationError("max_delay_native must be between 1 and 43200 seconds")
        if not 1024 <= max_message_bytes <= 1_048_576:
            raise ConfigurationError("max_message_bytes must be between 1024 and 1048576")
        self._client = (
            client
            if client is not None
            else new_client(region_name, endpoint_url, pollers, wait_time_s)
        )
        self._owns_client = client is None
        self.queue_url: str = queue_url if queue_url is not None else self._resolve(queue_name)
        self.dlq_url = dlq_url
        self.fifo = self.queue_url.endswith(".fifo")
        if dlq_url is not None and dlq_url.endswith(".fifo") != self.fifo:
            raise ConfigurationError(
                "a FIFO queue needs a FIFO dlq_url, and a standard one a standard"
            )
        self.ordered = self.fifo
        self._visibility = _seconds(visibility_timeout)
        self.lease_s = float(self._visibility)
        self.wait_time_s = int(wait_time_s)
        self.pollers = pollers
        self.max_delay_native = float(max_delay_native)
        # DelaySeconds is capped by SQS at 15 min; scaled down with max_delay_native
        # so that tests can exercise the re-send path in seconds.
        self._max_send_delay = min(MAX_DELAY_SECONDS, _seconds(max_delay_native))
        self.max_message_bytes = max_message_bytes
        self.default_topic = default_topic
        self.idempotency_attr = idempotency_attr
        self._queue_facts: dict[str, str] | None = None  # lazily read queue attributes
        self._facts_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQSTransport(queue_url={self.queue_url!r}, dlq_url={self.dlq_url!r})"

    # -- setup -------------------------------------------------------------------

    def _resolve(self, queue_name: str | None) -> str:
        try:
            with translated("GetQueueUrl", str(queue_name)):
                return str(self._client.get_queue_url(QueueName=queue_name)["QueueUrl"])
        except TransportError as e:
            if "does not exist" in str(e):
                raise ConfigurationError(
                    f"SQS queue {queue_name!r} does not exist; create it or check "
                    "region_name / endpoint_url"
                ) from e
            raise

    def _queue_fact(self, name: str) -> str | None:
        """One queue attribute (RedrivePolicy, ContentBasedDeduplication), read once."""
        with self._facts_lock:
            if self._queue_facts is None:
                with translated("GetQueueAttributes", self.queue_url):
                    got = self._client.get_queue_attributes(
                        QueueUrl=self.queue_url, AttributeNames=["All"]
                    )
                self._queue_facts = dict(got.get("Attributes", {}))
            return self._queue_facts.get(name)

    # -- receive -----------------------------------------------------------------

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        if max_messages <= 0:
            return []
        with translated("ReceiveMessage", self.queue_url):
            response = self._client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(max_messages, MAX_BATCH),
                WaitTimeSeconds=min(self.wait_time_s, _seconds(timeout)),
                VisibilityTimeout=self._visibility,
                MessageSystemAttributeNames=_SYSTEM_ATTRIBUTES,
                MessageAttributeNames=["All"],
            )
        # The lease starts when SQS hands the message out, i.e. about now (a long
        # poll may have waited up to 20 s before that, so not before the call).
        received_at = time.monotonic()
        return [
            message_from_sqs(raw, received_at=received_at, default_topic=self.default_topic)
            for raw in response.get("Messages", [])
        ]

    # -- settle ------------------------------------------------------------------

    def ack(self, messages: Sequence[Message]) -> list[AckFailure]:
        failures: list[AckFailure] = []
        for chunk in chunks(messages):
            entries = [{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)]
            with translated("DeleteMessageBatch", self.queue_url):
                response = self._client.delete_message_batch(
                    QueueUrl=self.queue_url, Entries=entries
                )
            for failed in response.get("Failed", []):
                failures.append(
                    AckFailure(
                        message=chunk[int(failed["Id"])],
                        reason=f"{failed.get('Code', '?')}: {failed.get('Message', '')}",
                        # A sender fault (an invalid receipt handle) fails again.
                        retryable=not failed.get("SenderFault", False),
                    )
                )
        return failures

    def extend(self, messages: Sequence[Message], seconds: float) -> None:
        now = time.monotonic()
        # SQS refuses visibility past 12 h after the receive; stay within it.
        change_visibility(
            self._client,
            self.queue_url,
            messages,
            lambda m: min(_seconds(seconds), int(MAX_VISIBILITY_S - _held_s(m, now))),
            "extend",
        )

    def nack(self, messages: Sequence[Message], delay: float = 0.0) -> None:
        if delay <= 0:
            change_visibility(self._client, self.queue_url, messages, lambda m: 0, "release")
            return
        now, wall = time.monotonic(), time.time()
        by_visibility: list[Message] = []
        by_resend: list[tuple[Message, float, int]] = []  # message, not-before, attempts used
        for m in messages:
            waiting = m.not_before is not None and m.not_before > wall
            fits = _held_s(m, now) + delay <= self.max_delay_native
            if self.fifo:
                # FIFO copies cannot be delayed on send (no per-message DelaySeconds),
                # so a copy is made only to attach a not-before; waiting for one uses
                # visibility, and each such wait counts as a receive.
                if fits or waiting:
                    by_visibility.append(m)
                else:
                    by_resend.append((m, wall + delay, m.attempt))
            elif waiting:
                # Only held until its ETA: the copy carries attempt - 1, because this
                # receive did not run the handler.
                by_resend.append((m, max(m.not_before or 0.0, wall + delay), m.attempt - 1))
            elif fits:
                by_visibility.append(m)
            else:
                by_resend.append((m, wall + delay, m.attempt))
        change_visibility(
            self._client,
            self.queue_url,
            by_visibility,
            lambda m: min(_seconds(delay), int(self.max_delay_native - _held_s(m, now))),
            "delay",
        )
        self._resend(by_resend)

    def _resend(self, items: Sequence[tuple[Message, float, int]]) -> None:
        """Carry long delays: send copies with a not-before, then delete the originals."""
        if not items:
            return
        wall = time.time()
        entries, sizes = [], []
        for i, (m, not_before, used) in enumerate(items):
            body, attributes = outgoing_attributes(m, not_before=not_before, attempts_used=used)
            entry = self._send_entry(str(i), body, attributes, m.ordering_key, fresh_dedup=True)
            if not self.fifo:
                entry["DelaySeconds"] = min(self._max_send_delay, _seconds(not_before - wall))
            entries.append(entry)
            sizes.append(wire_size(body, attributes))
        sent: dict[str, str] = {}
        try:
            errors = send_batches(
                self._client, self.queue_url, entries, sizes, self.max_message_bytes, sent
            )
        finally:
            # Only originals whose copy is safely in the queue are deleted; the others
            # come back when their lease runs out (a duplicate, never a loss).
            self._delete_originals([items[int(i)][0] for i in sent])
        if errors:
            raise TransportError(f"SQS re-send for a long delay failed: {'; '.join(errors)}")

    def _delete_originals(self, messages: list[Message]) -> None:
        try:
            failures = self.ack(messages)
        except TransportError as e:
            failures = [AckFailure(m, str(e)) for m in messages]
        for failure in failures:
            log.warning(
                "SQS delete after re-send of %s failed: %s", failure.message.id, failure.reason
            )

    def dead_letter(self, message: Message, reason: str) -> None:
        if self.dlq_url is None:
            # SQS's own RedrivePolicy moves the message once its receive count
            # passes maxReceiveCount; releasing it now gets it there soonest.
            if not self._queue_fact("RedrivePolicy"):
                raise ConfigurationError(
                    f"cannot dead-letter: no dlq_url was given and {self.queue_url} has no "
                    "RedrivePolicy; pass dlq_url= or give the queue a RedrivePolicy"
                )
            self.nack([message], delay=0.0)
            return
        body, attributes = dead_letter_attributes(message, reason, time.time())
        params: dict[str, Any] = {
            "QueueUrl": self.dlq_url,
            "MessageBody": body,
            "MessageAttributes": wire_attributes(attributes),
        }
        if self.fifo:
            params["MessageGroupId"] = message.ordering_key or "taskorbit-dlq"
            # The original's id: dead-lettering it twice (a crash between the copy
            # and the delete) leaves one copy.
            params["MessageDeduplicationId"] = deduplication_id(message.id or uuid.uuid4().hex)
        with translated("SendMessage", self.dlq_url):
            self._client.send_message(**params)
        with translated("DeleteMessage", self.queue_url):
            self._client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message.receipt)

    # -- publish -----------------------------------------------------------------

    def publish(self, messages: Sequence[Message]) -> list[str]:
        wall = time.time()
        entries, sizes = [], []
        for i, m in enumerate(messages):
            due = m.not_before is not None and m.not_before > wall
            body, attributes = outgoing_attributes(
                m, not_before=m.not_before if due else None, attempts_used=None
            )
            entry = self._send_entry(str(i), body, attributes, m.ordering_key, fresh_dedup=False)
            if due and not self.fifo:
                entry["DelaySeconds"] = min(self._max_send_delay, _seconds(m.not_before - wall))  # type: ignore[operator]
            entries.append(entry)
            sizes.append(wire_size(body, attributes))
        sent: dict[str, str] = {}
        errors = send_batches(
            self._client, self.queue_url, entries, sizes, self.max_message_bytes, sent
        )
        if errors:
            raise TransportError(
                f"SQS publish: {len(messages) - len(sent)} of {len(messages)} messages were "
                f"not sent: {'; '.join(errors)}"
            )
        return [sent[str(i)] for i in range(len(messages))]

    def _send_entry(
        self,
        entry_id: str,
        body: str,
        attributes: dict[str, str],
        ordering_key: str | None,
        *,
        fresh_dedup: bool,
    ) -> dict[str, Any]:
        check_count(attributes, "an SQS message")
        check_size(wire_size(body, attributes), self.max_message_bytes, "an SQS message")
        entry: dict[str, Any] = {
            "Id": entry_id,
            "MessageBody": body,
            "MessageAttributes": wire_attributes(attributes),
        }
        if not self.fifo:
            return entry
        if not ordering_key:
            raise ConfigurationError(
                f"{self.queue_url} is a FIFO queue: every message needs an ordering_key "
                "(it becomes the MessageGroupId); pass ordering_key= to publish() or delay()"
            )
        entry["MessageGroupId"] = ordering_key
        key = attributes.get(self.idempotency_attr)
        if fresh_dedup:
            # A re-sent copy must never be taken for a duplicate of its original.
            entry["MessageDeduplicationId"] = uuid.uuid4().hex
        elif key:
            entry["MessageDeduplicationId"] = deduplication_id(key)
        elif self._queue_fact("ContentBasedDeduplication") != "true":
            entry["MessageDeduplicationId"] = uuid.uuid4().hex
        return entry

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


__all__ = ["SQSTransport"]
