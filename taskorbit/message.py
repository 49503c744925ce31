"""Messages as they travel through a worker, and the results handlers return.

A :class:`Message` is the transport-neutral envelope. Transports fill it on receive
and read it on publish; the ``receipt`` field is theirs alone (an SQS receipt
handle, a Pub/Sub ack id, a Redis stream entry id).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgspec

# Attribute names taskorbit reserves on the wire. Transports that carry attributes
# natively (SQS, Pub/Sub) store these beside the user's; Redis stores them as fields.
TOPIC_ATTR = "taskorbit-topic"
NOT_BEFORE_ATTR = "taskorbit-not-before"  # wall-clock epoch seconds, as a decimal string
ATTEMPT_ATTR = "taskorbit-attempt"  # carried only where the broker keeps no delivery count
DLQ_REASON_ATTR = "taskorbit-dlq-reason"
DLQ_ATTEMPTS_ATTR = "taskorbit-dlq-attempts"
DLQ_TIME_ATTR = "taskorbit-dlq-time"
DEFAULT_IDEMPOTENCY_ATTR = "IdempotencyKey"


class Action(enum.Enum):
    """What the worker does with a message once its handler has run."""

    ACK = "ack"
    RETRY = "retry"  # again, after the retry policy's backoff
    RETRY_WITH_DELAY = "retry_with_delay"  # again, after the delay the handler chose
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class Result:
    """A handler's explicit decision. Returning ``None`` means :data:`ACK`."""

    action: Action
    delay: float | None = None
    reason: str | None = None


ACK = Result(Action.ACK)


def ack() -> Result:
    """The handler is done with the message; delete it from the broker."""
    return ACK


def retry(delay: float | None = None, *, reason: str | None = None) -> Result:
    """Run the message again: after ``delay`` seconds, or after the policy's backoff."""
    if delay is None:
        return Result(Action.RETRY, reason=reason)
    if delay < 0:
        raise ValueError(f"retry delay must be >= 0 seconds, got {delay!r}")
    return Result(Action.RETRY_WITH_DELAY, delay=float(delay), reason=reason)


def dead_letter(reason: str) -> Result:
    """Give up on the message: move it to the dead-letter queue with ``reason``."""
    return Result(Action.DEAD_LETTER, reason=reason)


class Message(msgspec.Struct, eq=False):
    """One message, received or about to be published.

    ``attempt`` is 1 on the first delivery and grows with every redelivery; where
    the broker keeps a delivery count (SQS ApproximateReceiveCount, Redis Streams'
    pending delivery count, Pub/Sub delivery_attempt) it comes from there, so that it
    survives crashes and restarts.

    ``malformed`` is set by a transport that received something it cannot read
    (``XADD stream * foo bar``, an attempt of ``"abc"``, a not-before of ``inf``):
    such a message still reaches the worker, which dead-letters it on its own, so a
    broken envelope never takes its receive batch down with it.

    A msgspec Struct rather than a dataclass: it is built once per message on the
    hot path, and a Struct is built about twice as fast. Identity matters (the
    runtime keys bookkeeping by ``id(message)``), so equality is identity.
    """

    topic: str
    body: bytes
    attributes: dict[str, str] = msgspec.field(default_factory=dict)
    id: str = ""
    attempt: int = 1
    receipt: Any = None  # the transport's own handle for ack / nack / extend
    ordering_key: str | None = None  # SQS MessageGroupId, Pub/Sub ordering key
    not_before: float | None = None  # wall-clock epoch seconds; None means now
    received_at: float = 0.0  # time.monotonic() when the transport handed it over
    #: Why the transport could not read this message's envelope (a missing or
    #: invalid field, named in the text), or None. The worker dead-letters such a
    #: message with this reason instead of running it; its neighbours run.
    malformed: str | None = None
