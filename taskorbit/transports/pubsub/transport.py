"""Google Cloud Pub/Sub transport, built on google-cloud-pubsub's synchronous Pull.

Why synchronous Pull and not the client's streaming ``subscribe()``: Pull asks for
exactly as many messages as the worker's ring has room for, so nothing is leased
that the worker cannot start, and every lease is managed by the runtime's lease
keeper instead of a second one inside the client. Semantics, limits and IAM roles
are in docs/transports/pubsub.md.

Verbs and the RPCs they make::

    receive     pull(max_messages=n)           + one modify_ack_deadline for messages
                                                 whose not-before is still ahead
                                               + one acknowledge for retry copies
                                                 meant for another subscription
    ack         acknowledge, 1,000 ack ids a call
    nack        modify_ack_deadline(delay)     when the delay fits (<= max_delay_native)
                                                 and the next delivery will be read
                                                 with the attempt the runtime set
                otherwise publish a copy for this subscription only (the attempt,
                the not-before, taskorbit-for-subscription), then acknowledge
    extend      modify_ack_deadline, 1,000 ack ids a call
    dead_letter publish to dlq_topic then acknowledge; without dlq_topic, nack and
                let the subscription's dead-letter policy forward it
    publish     PublisherClient.publish (its batching), then wait for every future

Why retries are copies only when they must be: a copy goes to the topic, so every
subscription of it receives one. Pub/Sub cannot publish to one subscription, so a
copy names its subscription in ``taskorbit-for-subscription`` and the others
acknowledge it unread (one wasted delivery each, none with a subscription filter).
A nack in place (``modify_ack_deadline``) reaches only this subscription and keeps
the message's place among its ordering key, but it cannot change what the next
delivery says: Pub/Sub adds one to ``delivery_attempt`` (dead-letter policy) or,
without a policy, the carried ``taskorbit-attempt`` stays. ``nack`` therefore goes
in place exactly when that comes out as the attempt the runtime asked for.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from taskorbit.errors import ConfigurationError, TransportConnectionError
from taskorbit.message import (
    DLQ_ATTEMPTS_ATTR,
    DLQ_REASON_ATTR,
    DLQ_TIME_ATTR,
    TOPIC_ATTR,
    Message,
)
from taskorbit.transports.base import AckFailure, Transport
from taskorbit.transports.pubsub.acks import AckIdCalls, receipt_of
from taskorbit.transports.pubsub.errors import translate
from taskorbit.transports.pubsub.flow import ByteBudget
from taskorbit.transports.pubsub.publish import Publishers
from taskorbit.transports.pubsub.wire import (
    FOR_SUBSCRIPTION_ATTR,
    Receipt,
    attempt_of,
    check_size,
    is_copy_for_another,
    project_of,
    read_envelope,
    resource_path,
    user_attributes,
    wire_attributes,
)

__all__ = ["PubSubTransport"]

log = logging.getLogger("taskorbit.transports.pubsub")

#: Pub/Sub's bounds for an ack deadline, in seconds.
MIN_ACK_DEADLINE_S, MAX_ACK_DEADLINE_S = 10, 600
#: Added to the pull's gRPC deadline. The emulator answers a pull whose deadline is
#: under about 1 s at once (an empty-queue spin) and otherwise waits until about 1 s
#: before the deadline, so this makes ``receive(timeout=t)`` wait about t.
PULL_DEADLINE_SLACK_S = 1.0
#: Dead-lettered message ids remembered so that a redelivery is not run again.
CONDEMNED_MEMORY = 10_000
#: Pub/Sub caps an attribute value at 1,024 bytes.
MAX_REASON_CHARS = 1000


class PubSubTransport(Transport):
    """Receive from a Pub/Sub subscription and publish to its topic.

    >>> PubSubTransport("projects/acme/subscriptions/jobs-worker",
    ...                 "projects/acme/topics/jobs", dlq_topic="jobs-dead")  # doctest: +SKIP
    """

    name = "pubsub"
    durable = True
    needs_lease = True
    max_batch = 1000
    max_delay = float(MAX_ACK_DEADLINE_S)

    def __init__(
        self,
        subscription: str | None = None,
        topic: str | None = None,
        *,
        project: str | None = None,
        dlq_topic: str | None = None,
        ack_deadline_s: float = 30.0,
        max_delay_native: float = float(MAX_ACK_DEADLINE_S),
        subscriber: Any = None,
        publisher: Any = None,
        batch_settings: pubsub_v1.types.BatchSettings | None = None,
        max_bytes: int | None = None,
        ordered: bool = True,
        create: bool = False,
        rpc_timeout_s: float = 30.0,
        redelay_threshold_s: float = 1.0,
    ) -> None:
        if subscription is None and topic is None:
            raise ConfigurationError("PubSubTransport needs subscription=..., topic=..., or both")
        if not MIN_ACK_DEADLINE_S <= ack_deadline_s <= MAX_ACK_DEADLINE_S:
            raise ConfigurationError(
                f"ack_deadline_s must be between {MIN_ACK_DEADLINE_S} and {MAX_ACK_DEADLINE_S} "
                f"seconds (Pub/Sub's bounds), got {ack_deadline_s!r}"
            )
        if not 1 <= max_delay_native <= MAX_ACK_DEADLINE_S:
            raise ConfigurationError(
                f"max_delay_native must be between 1 and {MAX_ACK_DEADLINE_S} seconds, "
                f"got {max_delay_native!r}"
            )
        if max_bytes is not None and max_bytes <= 0:
            raise ConfigurationError(f"max_bytes must be greater than 0, got {max_bytes!r}")
        self._subscription = (
            resource_path(subscription, "subscriptions", project) if subscription else None
        )
        # Short topic ids live in the subscription's project unless told otherwise.
        home = project or (project_of(self._subscription) if self._subscription else None)
        self._topic = resource_path(topic, "topics", home) if topic else None
        home = home or project_of(self._topic or "")
        self._dlq_topic = resource_path(dlq_topic, "topics", home) if dlq_topic else None
        self.lease_s = float(ack_deadline_s)
        self.ordered = ordered
        self._max_delay_native = int(max_delay_native)
        self._rpc_timeout_s = rpc_timeout_s
        self._redelay_threshold_s = redelay_threshold_s
        # Messages from producers that do not set taskorbit-topic are routed by the
        # Pub/Sub topic (or subscription) id.
        self._default_topic = (self._topic or self._subscription or "").rsplit("/", 1)[-1]
        self._own_subscriber = subscriber is None
        self._subscriber = subscriber if subscriber is not None else pubsub_v1.SubscriberClient()
        self._publishers = Publishers(
            publisher, batch_settings or pubsub_v1.types.BatchSettings(), rpc_timeout_s
        )
        self._lock = threading.Lock()
        self._acks: AckIdCalls | None = None
        self._budget = ByteBudget(max_bytes)
        self._condemned: OrderedDict[str, None] = OrderedDict()  # guarded by _lock
        #: Retry copies meant for other subscriptions, acknowledged unread; guarded
        #: by _lock. For tests and curiosity.
        self.skipped_copies = 0
        if create:
            self._create_missing()

    @property
    def subscription(self) -> str | None:
        """The full subscription path, ``projects/P/subscriptions/S``."""
        return self._subscription

    @property
    def topic(self) -> str | None:
        """The full topic path that ``publish`` and retry copies go to."""
        return self._topic

    @property
    def dlq_topic(self) -> str | None:
        return self._dlq_topic

    # -- where --------------------------------------------------------------------

    def check(self, timeout: float) -> None:
        """get_subscription: the endpoint answers, the credentials are accepted and
        the subscription exists. A no-op for a publish-only transport."""
        if self._subscription is None:
            return
        try:
            self._subscriber.get_subscription(
                subscription=self._subscription, timeout=max(0.1, timeout), retry=None
            )
        except gexc.GoogleAPICallError as error:
            failure = translate(error, self.describe())
            if isinstance(failure, TransportConnectionError):
                raise TransportConnectionError(
                    f"cannot connect to {self.describe()} ({_connect_reason(error)})"
                ) from error
            raise failure from error

    def describe(self) -> str:
        """``Pub/Sub subscription projects/P/subscriptions/S at pubsub.googleapis.com``
        (the emulator's host:port when PUBSUB_EMULATOR_HOST is set)."""
        what = (
            f"Pub/Sub subscription {self._subscription}"
            if self._subscription is not None
            else f"Pub/Sub topic {self._topic}"
        )
        host = getattr(self._subscriber, "api_endpoint", None)
        return f"{what} at {host}" if isinstance(host, str) and host else what

    # -- receive ------------------------------------------------------------------

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        subscription = self._require_subscription()
        if max_messages <= 0 or not self._budget.wait_for_room(timeout):
            return []
        try:
            response = self._subscriber.pull(
                subscription=subscription,
                max_messages=min(max_messages, self.max_batch),
                timeout=max(0.0, timeout) + PULL_DEADLINE_SLACK_S,
                retry=None,  # the runtime's poller backs off and calls again
            )
        except gexc.DeadlineExceeded:
            return []  # real Pub/Sub ends an empty long poll this way
        except gexc.GoogleAPICallError as error:
            raise translate(error, f"pull from {subscription}") from error
        received_at, now = time.monotonic(), time.time()
        messages: list[Message] = []
        hops: dict[int, list[str]] = {}  # deadline -> ack ids of messages sent back
        dead: list[Message] = []
        not_ours: list[str] = []  # ack ids of retry copies for other subscriptions
        for received in response.received_messages:
            if is_copy_for_another(received.message.attributes, subscription):
                not_ours.append(received.ack_id)
                continue
            try:
                message = self._to_message(received, received_at)
            except Exception as error:  # one message never fails its batch (promise 1)
                message = self._unreadable(received, received_at, error)
            if self._is_condemned(message.id):
                if self._dlq_topic is not None:
                    dead.append(message)  # its copy is in the DLQ topic already
                else:
                    # Hurry it on to the subscription's dead-letter policy.
                    hops.setdefault(self._condemned_deadline(message), []).append(received.ack_id)
            elif (
                message.not_before is not None
                and message.not_before - now > self._redelay_threshold_s
            ):
                # Not due yet: wait in the broker, not in this worker's memory.
                hops.setdefault(self._deadline_for(message.not_before - now), []).append(
                    received.ack_id
                )
            else:
                messages.append(message)
        if not_ours:
            self._skip(not_ours)
        for seconds, ack_ids in hops.items():
            self._ack_ids().modify_quietly(ack_ids, seconds)
        if dead:
            self._ack_ids().acknowledge(dead)
        self._budget.hold((receipt_of(m).ack_id, receipt_of(m).size) for m in messages)
        return messages

    def _to_message(self, received: Any, received_at: float) -> Message:
        """One pulled message, read on its own: an envelope taskorbit cannot read
        comes back with ``malformed`` set (promise 1 of transports/base.py)."""
        wire = received.message
        attributes = dict(wire.attributes)
        envelope = read_envelope(attributes)
        delivery_attempt = int(received.delivery_attempt or 0)
        size = len(wire.data) + sum(len(k) + len(v) for k, v in attributes.items())

        def attempt(deliveries: int) -> int:
            return attempt_of(
                envelope.base_attempt,
                deliveries,
                publish_time=wire.publish_time.timestamp(),
                not_before=envelope.not_before,
                hop_s=self._max_delay_native,
                redelay_threshold_s=self._redelay_threshold_s,
            )

        # What the next delivery will say after an in-place nack: Pub/Sub adds one
        # to delivery_attempt; without its count the carried attribute stays.
        in_place = attempt(delivery_attempt + 1) if delivery_attempt > 0 else attempt(0)
        return Message(
            topic=attributes.get(TOPIC_ATTR) or self._default_topic,
            body=bytes(wire.data),
            attributes=user_attributes(attributes),
            id=wire.message_id,
            attempt=attempt(delivery_attempt),
            receipt=Receipt(
                received.ack_id,
                delivery_attempt > 0,
                size,
                in_place_attempt=in_place,
                raw_attributes=attributes if envelope.malformed is not None else None,
            ),
            ordering_key=wire.ordering_key or None,
            not_before=envelope.not_before,
            received_at=received_at,
            malformed=envelope.malformed,
        )

    def _unreadable(self, received: Any, received_at: float, error: Exception) -> Message:
        """A message ``_to_message`` failed on, as plainly as it can be handed over."""
        wire = received.message
        attributes = dict(wire.attributes)
        counted = int(received.delivery_attempt or 0)
        return Message(
            topic=attributes.get(TOPIC_ATTR) or self._default_topic,
            body=bytes(wire.data),
            attributes=user_attributes(attributes),
            id=wire.message_id,
            attempt=max(1, counted),
            receipt=Receipt(
                received.ack_id, counted > 0, len(wire.data), raw_attributes=attributes
            ),
            received_at=received_at,
            malformed=f"unreadable envelope: {type(error).__name__}: {error}",
        )

    def _skip(self, ack_ids: list[str]) -> None:
        """Acknowledge retry copies meant for another subscription, unread."""
        log.debug(
            "acknowledging %d retry copies meant for other subscriptions of the topic",
            len(ack_ids),
        )
        with self._lock:
            self.skipped_copies += len(ack_ids)
        # A failed ack only means they come back after the deadline, to be skipped again.
        self._ack_ids().acknowledge_quietly(ack_ids)

    # -- settle -------------------------------------------------------------------

    def ack(self, messages: Sequence[Message]) -> list[AckFailure]:
        failures = self._ack_ids().acknowledge(messages)
        failed = {id(f.message) for f in failures if f.retryable}
        self._budget.release(receipt_of(m).ack_id for m in messages if id(m) not in failed)
        return failures

    def nack(self, messages: Sequence[Message], delay: float = 0.0) -> None:
        now = time.time()
        in_place: dict[int, list[Message]] = {}
        copies: list[Message] = []
        for message in messages:
            if self._fits_in_place(message, delay, now):
                in_place.setdefault(self._deadline_for(delay), []).append(message)
            else:
                copies.append(message)
        if copies:
            self._republish(copies, delay, now)
        for seconds, group in in_place.items():
            self._ack_ids().modify(group, seconds, "nack")
        self._budget.release(receipt_of(m).ack_id for m in messages)

    def _fits_in_place(self, message: Message, delay: float, now: float) -> bool:
        """Whether ``modify_ack_deadline`` can carry this nack: the delay fits and
        the next delivery will be read with ``message.attempt`` (promise 2)."""
        receipt = receipt_of(message)
        # A malformed message is dead-lettered when it comes back; a copy would
        # rewrite the envelope its dead letter must keep as received.
        if message.malformed is not None:
            return True
        # Longer than Pub/Sub carries, unless the message's own not-before (still in
        # its attributes) covers the rest: receive re-delays it in hops.
        covered = (
            message.not_before is not None
            and message.not_before >= now + delay - self._redelay_threshold_s
        )
        if delay > self._max_delay_native and not covered:
            return False
        if message.attempt == receipt.in_place_attempt:
            return True
        # A keyed message on an ordered subscription stays in its key's line: a
        # copy would go behind the key's later messages. A hand-back with a
        # dead-letter policy then costs one attempt (the count is one high, as on
        # SQS FIFO); a count that would go down (a retry without a policy, local
        # retries) still needs a copy, so that max_retries holds.
        keeps_order = self.ordered and message.ordering_key is not None
        return keeps_order and message.attempt < receipt.in_place_attempt

    def extend(self, messages: Sequence[Message], seconds: float) -> None:
        self._ack_ids().modify(messages, min(math.ceil(seconds), MAX_ACK_DEADLINE_S), "extend")

    def dead_letter(self, message: Message, reason: str) -> None:
        if self._dlq_topic is None:
            # The subscription's dead-letter policy forwards it after its
            # max_delivery_attempts; until then redeliveries are not run again.
            self._condemn(message.id)
            self._ack_ids().modify([message], self._condemned_deadline(message), "dead-letter nack")
            self._budget.release([receipt_of(message).ack_id])
            return
        raw = receipt_of(message).raw_attributes
        if raw is not None:
            # Malformed: keep what arrived (promise 4), all but the routing of a
            # retry copy, which would hide it from readers of the DLQ topic.
            attributes = {k: v for k, v in raw.items() if k != FOR_SUBSCRIPTION_ATTR}
        else:
            attributes = wire_attributes(
                Message(topic=message.topic, body=b"", attributes=message.attributes)
            )
        attributes[DLQ_REASON_ATTR] = reason[:MAX_REASON_CHARS]
        attributes[DLQ_ATTEMPTS_ATTR] = str(message.attempt)
        attributes[DLQ_TIME_ATTR] = repr(time.time())
        # The copy is published (and confirmed) before the original is removed.
        self._publishers.publish(self._dlq_topic, [(message.body, attributes, "")])
        # If the ack fails, the redelivery is acked on receipt instead of run again.
        self._condemn(message.id)
        for failure in self.ack([message]):
            log.warning("dead-lettered %s but its ack failed: %s", message.id, failure.reason)

    def _republish(self, messages: Sequence[Message], delay: float, now: float) -> None:
        """Copies for this subscription only, carrying the attempt the runtime set
        and the later of the message's not-before and now + delay. Originals are
        acknowledged only after every copy is confirmed, so none is lost."""
        topic = self._topic or self._topic_of_subscription()
        prepared = []
        for message in messages:
            # The later of its own not-before (an ETA must survive a hand-back)
            # and the delay asked for; none when both are past.
            due = max(message.not_before or 0.0, now + delay if delay > 0 else 0.0)
            copy = Message(
                topic=message.topic,
                body=message.body,
                attributes=message.attributes,
                ordering_key=message.ordering_key,
                not_before=due if due > now else None,
            )
            attributes = wire_attributes(
                copy, attempt=message.attempt, for_subscription=self._subscription
            )
            prepared.append((copy.body, attributes, copy.ordering_key or ""))
        self._publishers.publish(topic, prepared)
        for failure in self.ack(messages):
            log.warning(
                "re-published %s but could not ack the original (%s); it will run twice",
                failure.message.id,
                failure.reason,
            )

    # -- publish ------------------------------------------------------------------

    def publish(self, messages: Sequence[Message]) -> list[str]:
        topic = self._require_topic()
        prepared = []
        for message in messages:
            attributes = wire_attributes(message)
            key = message.ordering_key or ""
            check_size(topic, message.body, attributes, key)  # all checked before any is sent
            prepared.append((message.body, attributes, key))
        return self._publishers.publish(topic, prepared)

    # -- helpers ------------------------------------------------------------------

    def _deadline_for(self, delay: float) -> int:
        """Whole seconds, rounded up so nothing comes back early, capped natively."""
        if not math.isfinite(delay):
            return self._max_delay_native if delay > 0 else 0
        return min(max(0, math.ceil(delay)), self._max_delay_native)

    def _condemned_deadline(self, message: Message) -> int:
        # Without a dead-letter policy (no broker count) nothing will forward it:
        # park it for the longest native delay and say so, rather than lose it.
        if receipt_of(message).broker_counted:
            return 0
        log.error(
            "message %s was dead-lettered but %s has no dlq_topic and no dead-letter "
            "policy; it stays parked on the subscription",
            message.id,
            self._subscription,
        )
        return self._max_delay_native

    def _condemn(self, message_id: str) -> None:
        with self._lock:
            self._condemned[message_id] = None
            self._condemned.move_to_end(message_id)
            while len(self._condemned) > CONDEMNED_MEMORY:
                self._condemned.popitem(last=False)

    def _is_condemned(self, message_id: str) -> bool:
        with self._lock:
            return message_id in self._condemned

    def _ack_ids(self) -> AckIdCalls:
        if self._acks is None:
            self._acks = AckIdCalls(
                self._subscriber, self._require_subscription(), self._rpc_timeout_s
            )
        return self._acks

    def _require_subscription(self) -> str:
        if self._subscription is None:
            raise ConfigurationError("this PubSubTransport was created without subscription=...")
        return self._subscription

    def _require_topic(self) -> str:
        if self._topic is None:
            raise ConfigurationError(
                "this PubSubTransport was created without topic=...; pass it to publish"
            )
        return self._topic

    def _topic_of_subscription(self) -> str:
        """The topic a retry copy goes to when only the subscription was given."""
        try:
            topic = str(self._subscriber.get_subscription(subscription=self._subscription).topic)
        except gexc.GoogleAPICallError as error:
            raise ConfigurationError(
                f"pass topic=... to PubSubTransport: re-publishing a retry needs it ({error})"
            ) from error
        self._topic = topic
        return topic

    def _create_missing(self) -> None:
        self._publishers.create_topics(t for t in (self._topic, self._dlq_topic) if t)
        if self._subscription is None:
            return
        request = {
            "name": self._subscription,
            "topic": self._require_topic(),
            # Always set: pstest fails a subscription created without one.
            "ack_deadline_seconds": math.ceil(self.lease_s),
            "enable_message_ordering": self.ordered,
        }
        try:
            self._subscriber.create_subscription(request=request)
        except gexc.AlreadyExists:
            pass
        except gexc.GoogleAPICallError as error:
            raise translate(error, f"create subscription {self._subscription}") from error

    def close(self) -> None:
        self._publishers.close()
        if self._own_subscriber:
            self._subscriber.close()


def _connect_reason(error: gexc.GoogleAPICallError) -> str:
    """gRPC's "failed to connect to all addresses; last error: UNKNOWN:
    ipv4:127.0.0.1:8085: Failed to connect to remote host: Connection refused" as
    its last words, "Connection refused"; other messages as they are."""
    text = str(error.message or error)
    if "failed to connect" in text.lower():
        return text.rsplit(": ", 1)[-1].strip() or text
    return text
