"""The transport protocol every broker adapter implements.

The runtime talks to brokers only through these verbs, and adapts to what a broker
can do through the class attributes below instead of isinstance checks.

Threading: ``receive`` is called from the poller thread(s), ``ack``/``nack``/
``extend``/``dead_letter`` from the settler and lease threads, ``publish`` from any
thread. Implementations must be safe for that (one client per thread, or a client
that is itself thread-safe, as boto3 clients and redis-py pools are).

The settlement invariant (docs/semantics.md) rests on four promises of every
transport:

1. ``receive`` never raises because of one message. An entry whose envelope it
   cannot read (a missing topic, an attempt of ``"abc"``, a not-before of ``inf``,
   undecodable base64) is returned like the others, with ``Message.malformed`` set
   to a reason that names the field; the worker dead-letters it and its
   neighbours run.
2. ``nack`` gives a message back carrying ``message.attempt`` as the attempt of
   its next delivery. The runtime sets it first: one more than the run that failed
   for a retry, unchanged for a message handed back without running (shutdown, not
   yet due, a duplicate whose twin is still running), so a graceful hand-back uses
   no attempt. Where the broker counts deliveries itself (SQS
   ApproximateReceiveCount, Pub/Sub delivery_attempt), the transport remembers at
   receive what the broker will report next and, when that differs, carries the
   difference (a re-sent copy with ``ATTEMPT_ATTR``) or says in its docs why it
   cannot. Attempts therefore only grow, and a handler runs at most
   ``max_retries + 1`` times.
3. A retry or hand-back reaches only the consumer group or subscription that
   handed it back, never the other subscribers of the topic.
4. ``dead_letter`` accepts a malformed message and keeps what was received (body
   and attributes as they arrived) beside the reason.

Delays: ``nack(delay=)`` and a published message's ``not_before`` may be any length.
A transport carries what its broker supports natively (SQS visibility up to 12 h,
Pub/Sub ack deadline up to 600 s) and longer ones by re-publishing with
``NOT_BEFORE_ATTR``; on receipt it sets ``Message.not_before`` from that attribute,
and the runtime delays again whatever is not yet due.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from taskorbit.message import Message


@dataclass(frozen=True, slots=True)
class AckFailure:
    """One message of an ack batch that the broker did not delete, and why."""

    message: Message
    reason: str
    retryable: bool = True


class Transport(abc.ABC):
    """A broker: receive, ack, nack(delay=), extend, dead_letter, publish, close."""

    #: Short name used in logs, metrics and the CLI ("memory", "sqs", "pubsub", ...).
    name: ClassVar[str] = "transport"
    #: Un-acked messages come back after a worker crash (at-least-once).
    durable: ClassVar[bool] = False
    #: ack / nack / extend mean something; False for broadcast (Redis Pub/Sub).
    acknowledges: ClassVar[bool] = True
    #: The broker pushes messages whether or not the worker has room (Redis Pub/Sub);
    #: the ring's overflow policy then applies. Pull transports are never asked for
    #: more than the ring can hold.
    push: ClassVar[bool] = False
    #: The most messages one ``receive`` call returns (SQS 10, Pub/Sub 1000, ...).
    max_batch: ClassVar[int] = 1000
    #: The longest delay the broker carries natively; longer ones are re-published
    #: with a not-before attribute by the transport itself.
    max_delay: ClassVar[float] = math.inf
    #: Received messages become visible to other consumers after ``lease_s`` unless
    #: extended; the runtime's lease keeper calls ``extend`` before that happens.
    needs_lease: ClassVar[bool] = False
    #: Messages with one ordering key must not run concurrently (SQS FIFO groups,
    #: Pub/Sub ordering keys); the dispatcher serialises them when this is True.
    ordered: bool = False
    #: How long a received message stays invisible to other consumers, in seconds.
    lease_s: float = math.inf
    #: How many poller threads call ``receive`` at once (several help SQS, whose
    #: every receive is one HTTP round trip of at most 10 messages).
    pollers: int = 1

    @abc.abstractmethod
    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        """Return up to ``max_messages`` messages, waiting up to ``timeout`` seconds
        for the first one (long poll). Return ``[]`` when none arrived in time.
        Sets ``attempt``, ``receipt``, ``received_at`` and ``not_before``, and
        ``malformed`` on a message whose envelope cannot be read (never raises for
        one message; raises :class:`~taskorbit.errors.TransportError` only when the
        call itself failed)."""

    @abc.abstractmethod
    def ack(self, messages: Sequence[Message]) -> list[AckFailure]:
        """Delete ``messages`` from the broker in as few calls as it allows.

        Returns the messages the broker refused (partial batch failure); raises
        :class:`~taskorbit.errors.TransportError` when the whole call failed."""

    @abc.abstractmethod
    def nack(self, messages: Sequence[Message], delay: float = 0.0) -> None:
        """Give ``messages`` back to this consumer group / subscription only, to be
        redelivered after ``delay`` seconds carrying ``message.attempt`` (which the
        runtime has set to the attempt of that next delivery; see the module
        docstring). ``delay=0`` releases them at once."""

    def extend(self, messages: Sequence[Message], seconds: float) -> None:  # noqa: B027
        """Keep ``messages`` invisible to other consumers for ``seconds`` more.
        A no-op for transports that do not need a lease."""

    @abc.abstractmethod
    def dead_letter(self, message: Message, reason: str) -> None:
        """Move ``message`` to the dead-letter queue with ``reason`` and its attempt
        count, then remove it from the main queue. Never loses it: the copy is made
        before the original is removed. A malformed message's copy keeps what was
        received as it arrived."""

    @abc.abstractmethod
    def publish(self, messages: Sequence[Message]) -> list[str]:
        """Send ``messages`` (topic, body, attributes, ordering_key, not_before) in as
        few calls as the broker allows; return their broker-assigned ids in order."""

    def check(self, timeout: float) -> None:  # noqa: B027
        """Make one cheap call to the broker, waiting at most about ``timeout``
        seconds; return when it answered. Raises
        :class:`~taskorbit.errors.TransportConnectionError` (or another
        :class:`~taskorbit.errors.TransportError`) with a sentence that names the
        endpoint and the cause, e.g. ``cannot connect to redis://127.0.0.1:6379/0
        (Connection refused)``. ``taskorbit worker`` calls it before it starts, so
        that a broker that is down says so at once. A no-op where there is nothing
        to reach (the in-memory transport)."""

    def describe(self) -> str:
        """Where this transport's broker is, without secrets, for log lines:
        ``redis://:***@cache:6379/0``, an SQS queue URL, a Pub/Sub subscription."""
        return self.name

    def owns(self, message: Message) -> bool:
        """Whether this worker may still start ``message``. False where the broker
        has given it to another consumer meanwhile (a Kafka partition revoked in a
        rebalance); the dispatcher then hands it back unrun (``nack(delay=0)``,
        attempt unchanged), which such a transport settles without a broker call."""
        return True

    def close(self) -> None:  # noqa: B027
        """Release connections. Called once, after the worker stopped using it."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
