"""Look into a transport's dead-letter queue and move messages back out of it.

Every implementation follows :class:`DeadLetterQueue`; :func:`for_transport` picks
the one for a transport, built from that transport's public configuration (stream
names, queue URLs, topic paths). The rule they all keep: **redrive copies a
message into the main queue first and deletes it from the DLQ only after the copy
is accepted**, so a crash in between leaves a duplicate, never a loss.

A redriven message starts over: attempt 1, without the ``taskorbit-dlq-*``
attributes, with its topic, body, other attributes and ordering key unchanged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from taskorbit.errors import ConfigurationError
from taskorbit.message import (
    ATTEMPT_ATTR,
    DLQ_ATTEMPTS_ATTR,
    DLQ_REASON_ATTR,
    DLQ_TIME_ATTR,
    NOT_BEFORE_ATTR,
    Message,
)
from taskorbit.transports.base import Transport

_DLQ_ONLY = (DLQ_REASON_ATTR, DLQ_ATTEMPTS_ATTR, DLQ_TIME_ATTR, ATTEMPT_ATTR, NOT_BEFORE_ATTR)


@dataclass(frozen=True)
class DeadLetter:
    """One message in a DLQ: the original message plus why and when it landed there.

    ``id`` is what ``show``/``redrive``/``purge`` accept: the original message id.
    """

    id: str
    message: Message
    reason: str
    attempts: int
    time: float | None

    @classmethod
    def of(cls, message: Message) -> DeadLetter:
        attrs = message.attributes
        stamp = attrs.get(DLQ_TIME_ATTR)
        return cls(
            id=message.id,
            message=message,
            reason=attrs.get(DLQ_REASON_ATTR, ""),
            attempts=int(attrs.get(DLQ_ATTEMPTS_ATTR, "0") or 0),
            time=float(stamp) if stamp else None,
        )

    @property
    def topic(self) -> str:
        return self.message.topic

    @property
    def when(self) -> str:
        if self.time is None:
            return "-"
        return dt.datetime.fromtimestamp(self.time, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

    def redriven(self) -> Message:
        """The copy that goes back to the main queue: a fresh first attempt."""
        original = self.message
        return Message(
            topic=original.topic,
            body=original.body,
            attributes={k: v for k, v in original.attributes.items() if k not in _DLQ_ONLY},
            ordering_key=original.ordering_key,
        )


@dataclass(frozen=True)
class Selection:
    """Which dead letters an operation applies to: all that match every given part.

    ``ids`` match exactly; ``topic`` matches exactly; ``reason`` is a
    case-insensitive substring of the dead-letter reason.
    """

    ids: frozenset[str] = field(default_factory=frozenset)
    topic: str | None = None
    reason: str | None = None

    @classmethod
    def of(
        cls, ids: Iterable[str] = (), *, topic: str | None = None, reason: str | None = None
    ) -> Selection:
        return cls(frozenset(ids), topic, reason)

    @property
    def everything(self) -> bool:
        return not self.ids and self.topic is None and self.reason is None

    def matches(self, letter: DeadLetter) -> bool:
        if self.ids and letter.id not in self.ids:
            return False
        if self.topic is not None and letter.topic != self.topic:
            return False
        return self.reason is None or self.reason.lower() in letter.reason.lower()


Letters = list[DeadLetter]  # spelled once here: the classes below define a method "list"
ALL = Selection()


class DeadLetterQueue(Protocol):
    """What ``taskorbit dlq`` needs of a transport's dead-letter queue."""

    def list(self, limit: int = 100, selection: Selection | None = None) -> Letters:
        """Up to ``limit`` dead letters matching ``selection``, oldest first."""

    def show(self, message_id: str) -> DeadLetter | None:
        """The dead letter with this id, or None."""

    def redrive(
        self, selection: Selection, *, limit: int | None = None, dry_run: bool = False
    ) -> Letters:
        """Copy the matching dead letters to the main queue, then delete them from
        the DLQ. Returns what was (or, with ``dry_run``, would be) redriven."""

    def purge(
        self, selection: Selection, *, limit: int | None = None, dry_run: bool = False
    ) -> Letters:
        """Delete the matching dead letters for good. Returns what was deleted."""


def for_transport(transport: Transport) -> DeadLetterQueue:
    """The dead-letter queue of ``transport``; ConfigurationError when it has none."""
    name = transport.name
    if name == "memory":
        from taskorbit.dlq.memory import MemoryDeadLetterQueue

        return MemoryDeadLetterQueue(transport)  # type: ignore[arg-type]
    if name == "redis-streams":
        from taskorbit.dlq.redis_streams import RedisStreamsDeadLetterQueue

        return RedisStreamsDeadLetterQueue(transport)  # type: ignore[arg-type]
    if name == "sqs":
        from taskorbit.dlq.sqs import SQSDeadLetterQueue

        return SQSDeadLetterQueue(transport)  # type: ignore[arg-type]
    if name == "pubsub":
        from taskorbit.dlq.pubsub import PubSubDeadLetterQueue

        return PubSubDeadLetterQueue(transport)  # type: ignore[arg-type]
    raise ConfigurationError(
        f"the {name!r} transport has no dead-letter queue to inspect "
        "(Redis Pub/Sub is at-most-once and keeps none)"
    )


def take(
    letters: Iterable[DeadLetter], selection: Selection, limit: int | None
) -> list[DeadLetter]:
    """The first ``limit`` of ``letters`` that ``selection`` matches."""
    chosen: list[DeadLetter] = []
    for letter in letters:
        if limit is not None and len(chosen) >= limit:
            break
        if selection.matches(letter):
            chosen.append(letter)
    return chosen


def publish_copies(transport: Transport, letters: Sequence[DeadLetter]) -> None:
    """Publish the redriven copies; raises (and so deletes nothing) if any failed."""
    if letters:
        transport.publish([letter.redriven() for letter in letters])


__all__ = ["ALL", "DeadLetter", "Letters", "DeadLetterQueue", "Selection", "for_transport"]
