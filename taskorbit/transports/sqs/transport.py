"""Amazon SQS (standard and FIFO queues) through boto3.

Every verb maps to a batch call of at most 10 entries: ReceiveMessage (long poll),
DeleteMessageBatch (ack), ChangeMessageVisibilityBatch (extend, nack), and
SendMessageBatch (publish, re-sent hand-backs). docs/transports/sqs.md explains the
semantics, the IAM permissions and the limits.

Attempts. ``attempt`` is ApproximateReceiveCount plus the attempts a re-sent copy
carries (``taskorbit-attempt``), so max_retries holds across crashes, restarts and
pods. SQS counts receives, not runs: a retry held in the worker's timer wheel runs
again without a receive, and a message handed back without running (shutdown, not
yet due) was received without a run. So ``nack`` follows one rule. The runtime sets
``message.attempt`` to the attempt the next delivery must carry; the receipt knows
what SQS will report on the next receive of this same message (its attempt at
receive + 1). When the two agree and the delay fits in the visibility, the
visibility is changed; otherwise a copy is sent carrying ``attempt - 1`` attempts
used, and the original is deleted (copy first: a crash in between leaves a
duplicate, never a loss). The same rule carries delays longer than visibility allows
and a message waiting for its not-before time.

Two exceptions. A malformed message is always handed back in place: a copy would
re-encode what could not be read (it is on its way to the dead-letter queue anyway).
And on FIFO queues a copy goes to the back of its message group, after messages
published later, so a hand-back there changes the visibility while the delay fits: a
graceful hand-back then costs one receive count, and retries that ran from the timer
wheel are remembered in this process only (see ``_owed``).

Delays. SQS carries a delay natively in two ways: a received message's visibility
(up to 12 h after it was received) and a new message's DelaySeconds (up to 15 min;
standard queues only). A longer one goes as a copy with ``taskorbit-not-before``;
when the copy arrives early the runtime delays it again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from taskorbit.errors import (
    ConfigurationError,
    PayloadTooLargeError,
    TransportConnectionError,
    TransportError,
)
from taskorbit.extras import needs_extra
from taskorbit.message import DEFAULT_IDEMPOTENCY_ATTR, Message
from taskorbit.transports.base import AckFailure, Transport
from taskorbit.transports.url import redact

with needs_extra("the SQS transport", "sqs", "boto3", "botocore"):
    from taskorbit.transports.sqs.client import (
        change_visibility,
        chunks,
        new_client,
        send_batches,
    )
    from taskorbit.transports.sqs.errors import translated

from taskorbit.transports.sqs.wire import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_BATCH,
    MAX_DELAY_SECONDS,
    MAX_VISIBILITY_S,
    check_count,
    check_size,
    dead_letter_copy,
    deduplication_id,
    message_from_sqs,
    outgoing_attributes,
    receipt_of,
    wire_attributes,
    wire_size,
)

log = logging.getLogger("taskorbit.transports.sqs")

_SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"]
# Queue attributes are read again after this long, so that a RedrivePolicy added to
# the queue of a running worker is noticed.
_FACTS_MAX_AGE_S = 60.0
# Message ids whose owed attempts are remembered, at most (oldest dropped).
_MAX_OWED = 10_000


def _seconds(value: float) -> int:
    """SQS counts whole seconds; round up so that nothing happens early."""
    return max(0, math.ceil(value - 1e-9))


def _held_s(message: Message, now: float) -> float:
    """Seconds since SQS handed ``message`` out (0 for one built by hand)."""
    return now - message.received_at if message.received_at else 0.0


def _copy_not_before(message: Message, delay: float, wall: float) -> float | None:
    """When a re-sent copy is due: after ``delay``, and never before the original's
    own not-before (a message handed back while it waits for one keeps waiting)."""
    due = [t for t in (message.not_before, wall + delay if delay > 0 else None) if t]
    return max(due) if due and max(due) > wall else None


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
        # Queue attributes, read when first needed and again after _FACTS_MAX_AGE_S;
        # guarded by self._facts_lock.
        self._queue_facts: dict[str, str] | None = None
        self._facts_read_at = 0.0
        self._facts_lock = threading.Lock()
        # MessageId -> the attempt its next receive must carry, for a message handed
        # back in place while SQS will count less (on FIFO queues, retries that ran
        # from the timer wheel). In memory, so it holds within this process only;
        # guarded by self._owed_lock.
        self._owed: dict[str, int] = {}
        self._owed_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQSTransport(queue_url={self.queue_url!r}, dlq_url={self.dlq_url!r})"

    # -- where -------------------------------------------------------------------

    def check(self, timeout: float) -> None:
        """GetQueueAttributes of the queue: the endpoint answers, the credentials are
        accepted and the queue exists. Bounded by the client's connect timeout and
        retries (5 s, 3 attempts), not by ``timeout``: boto3 takes no per-call one."""
        try:
            with translated("GetQueueAttributes", self.queue_url):
                self._client.get_queue_attributes(
                    QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
                )
        except TransportConnectionError as e:
            cause = e.__cause__ if e.__cause__ is not None else e
            raise TransportConnectionError(
                f"cannot connect to {self.describe()} ({cause})"
            ) from e.__cause__

    def describe(self) -> str:
        """``SQS queue https://sqs.eu-west-1.amazonaws.com/123456789012/orders``, and
        the endpoint when requests go elsewhere (``via http://localhost:4566``)."""
        endpoint = getattr(getattr(self._client, "meta", None), "endpoint_url", None)
        where = f"SQS queue {redact(self.queue_url)}"
        queue_host = urlsplit(self.queue_url).netloc
        if isinstance(endpoint, str) and urlsplit(endpoint).netloc != queue_host:
            where += f" via {redact(endpoint)}"
        return where

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
        """One queue attribute (RedrivePolicy, ContentBasedDeduplication), cached."""
        with self._facts_lock:
            now = time.monotonic()
            if self._queue_facts is None or now - self._facts_read_at > _FACTS_MAX_AGE_S:
                with translated("GetQueueAttributes", self.queue_url):
                    got = self._client.get_queue_attributes(
                        QueueUrl=self.queue_url, AttributeNames=["All"]
                    )
                self._queue_facts = dict(got.get("Attributes", {}))
                self._facts_read_at = now
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
        # One entry at a time: a broken envelope comes back marked malformed and
        # never takes its neighbours down with it.
        messages = [
            message_from_sqs(raw, received_at=received_at, default_topic=self.default_topic)
            for raw in response.get("Messages", [])
        ]
        if self._owed:  # a peek without the lock: empty unless hand-backs under-count
            with self._owed_lock:
                for m in messages:
                    m.attempt = max(m.attempt, self._owed.pop(m.id, 0))
        return messages

    # -- settle ------------------------------------------------------------------

    def ack(self, messages: Sequence[Message]) -> list[AckFailure]:
        failures: list[AckFailure] = []
        for chunk in chunks(messages):
            entries = [
                {"Id": str(i), "ReceiptHandle": receipt_of(m).handle} for i, m in enumerate(chunk)
            ]
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
        now, wall = time.monotonic(), time.time()
        in_place: list[Message] = []
        copies: list[tuple[Message, dict[str, Any], int]] = []  # message, entry, size
        for m in messages:
            if not self._in_place(m, delay, now):
                try:
                    copies.append((m, *self._copy_entry(m, delay, wall, len(copies))))
                    continue
                except (ConfigurationError, PayloadTooLargeError) as e:
                    # No room for the carried attribute: hand it back in place, where
                    # SQS counts the attempt its own way, rather than not at all.
                    log.warning("SQS hand-back of %s in place, not as a copy: %s", m.id, e)
            in_place.append(m)
            if m.attempt > receipt_of(m).next_attempt:
                self._owe(m.id, m.attempt)
        change_visibility(
            self._client,
            self.queue_url,
            in_place,
            lambda m: min(_seconds(delay), int(self.max_delay_native - _held_s(m, now))),
            "delay" if delay > 0 else "release",
        )
        self._resend(copies)

    def _in_place(self, message: Message, delay: float, now: float) -> bool:
        """Whether a visibility change hands ``message`` back; else a copy does.

        The rule: in place exactly when SQS will report the attempt asked for and the
        delay fits in the visibility. Two exceptions stay in place regardless: a
        malformed message (a copy would re-encode what could not be read; it is on
        its way to the DLQ anyway), and on FIFO queues a delay that fits, or a wait
        for a not-before, which visibility carries in steps (a copy would leave its
        place in the group).
        """
        fits = _held_s(message, now) + delay <= self.max_delay_native
        if message.malformed is not None:
            return True
        if not self.fifo:
            return fits and message.attempt == receipt_of(message).next_attempt
        waiting = message.not_before is not None and message.not_before > time.time()
        return fits or waiting

    def _owe(self, message_id: str, attempt: int) -> None:
        """Remember that SQS will under-count this message's next receive."""
        with self._owed_lock:
            self._owed.pop(message_id, None)
            self._owed[message_id] = attempt
            while len(self._owed) > _MAX_OWED:
                del self._owed[next(iter(self._owed))]

    def _copy_entry(
        self, message: Message, delay: float, wall: float, index: int
    ) -> tuple[dict[str, Any], int]:
        """The SendMessageBatch entry of a copy that arrives as ``message.attempt``:
        SQS counts the copy's receives from 1 again, so it carries the rest."""
        not_before = _copy_not_before(message, delay, wall)
        body, attributes = outgoing_attributes(
            message, not_before=not_before, attempts_used=message.attempt - 1
        )
        entry = self._send_entry(
            str(index), body, attributes, message.ordering_key, fresh_dedup=True
        )
        if not self.fifo and not_before is not None:
            entry["DelaySeconds"] = min(self._max_send_delay, _seconds(not_before - wall))
        return entry, wire_size(body, attributes)

    def _resend(self, copies: Sequence[tuple[Message, dict[str, Any], int]]) -> None:
        """Send the copies, then delete the originals whose copy SQS accepted."""
        if not copies:
            return
        sent: dict[str, str] = {}
        try:
            errors = send_batches(
                self._client,
                self.queue_url,
                [entry for _, entry, _ in copies],
                [size for _, _, size in copies],
                self.max_message_bytes,
                sent,
            )
        finally:
            # Only originals whose copy is safely in the queue are deleted; the others
            # come back when their lease runs out (a duplicate, never a loss).
            self._delete_originals([copies[int(i)][0] for i in sent])
        if errors:
            raise TransportError(f"SQS re-send of a hand-back failed: {'; '.join(errors)}")

    def _delete_originals(self, messages: list[Message]) -> None:
        try:
            failures = self.ack(messages)
        except TransportError as e:
            failures = [AckFailure(m, str(e)) for m in messages]
        for failure in failures:
            log.warning(
                "SQS delete after re-send of %s failed: %s", failure.message.id, failure.reason
            )

    def release(self, messages: Sequence[Message]) -> None:
        """Make ``messages`` visible again at once, in place: SQS counts one more
        receive and the MessageId stays. For readers that only looked (the DLQ
        commands) and for RedrivePolicy dead-lettering; a worker uses ``nack``."""
        change_visibility(self._client, self.queue_url, messages, lambda m: 0, "release")

    def dead_letter(self, message: Message, reason: str) -> None:
        if self.dlq_url is None:
            self._leave_to_redrive_policy(message)
            return
        body, attributes = dead_letter_copy(message, reason, time.time())
        params: dict[str, Any] = {
            "QueueUrl": self.dlq_url,
            "MessageBody": body,
            "MessageAttributes": attributes,
        }
        if self.fifo:
            params["MessageGroupId"] = message.ordering_key or "taskorbit-dlq"
            # The original's id: dead-lettering it twice (a crash between the copy
            # and the delete) leaves one copy.
            params["MessageDeduplicationId"] = deduplication_id(message.id or uuid.uuid4().hex)
        with translated("SendMessage", self.dlq_url):
            self._client.send_message(**params)
        with translated("DeleteMessage", self.queue_url):
            self._client.delete_message(
                QueueUrl=self.queue_url, ReceiptHandle=receipt_of(message).handle
            )

    def _leave_to_redrive_policy(self, message: Message) -> None:
        if not self._queue_fact("RedrivePolicy"):
            raise ConfigurationError(
                f"cannot dead-letter SQS message {message.id}: this SQSTransport has no "
                f"dlq_url and the queue {self.queue_url} has no RedrivePolicy. Pass "
                "dlq_url= to SQSTransport, or give the queue a RedrivePolicy "
                "(deadLetterTargetArn, maxReceiveCount). Until then the message stays "
                "in the queue and is received again."
            )
        # SQS's RedrivePolicy moves the message once its receive count passes
        # maxReceiveCount; releasing it in place gets it there soonest (a copy
        # would start counting from 1 again).
        self.release([message])

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
