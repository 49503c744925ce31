"""Look into a transport's dead-letter queue and move messages back out of it.

Every implementation follows :class:`DeadLetterQueue`; :func:`for_transport` picks
the one for a transport, built from that transport's public configuration (stream
names, queue URLs, topic paths). The rule they all keep: **redrive copies a
message into the main queue first and deletes it from the DLQ only after the copy
is accepted**, so a crash in between leaves a duplicate, never a loss.

A redriven message starts over: attempt 1, without the ``taskorbit-dlq-*``
attributes, with its topic, body, other attributes and ordering key unchanged. It
is a new message with a new id; the dead letter's id travels with it in the
``taskorbit-redriven-from`` attribute, and ``redrive`` reports the new id of each
(:attr:`DeadLetter.redriven_as`), so that the two can be traced to each other.
"""

from __future__ import annotations

import datetime as dt
import importlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
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

#: On a redriven copy: the id of the dead letter it was copied from.
REDRIVEN_FROM_ATTR = "taskorbit-redriven-from"


@dataclass(frozen=True)
class DeadLetter:
    """One message in a DLQ: the original message plus why and when it landed there.

    ``id`` is what ``show``/``redrive``/``purge`` accept: the original message id.
    ``redriven_as`` is set on what ``redrive`` returns: the id the broker gave the
    copy (None for a dry run).
    """

    id: str
    message: Message
    reason: str
    attempts: int
    time: float | None
    redriven_as: str | None = None

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
        """The copy that goes back to the main queue: a fresh first attempt, which
        names the dead letter it came from in ``taskorbit-redriven-from``."""
        original = self.message
        attributes = {k: v for k, v in original.attributes.items() if k not in _DLQ_ONLY}
        attributes[REDRIVEN_FROM_ATTR] = self.id
        return Message(
            topic=original.topic,
            body=original.body,
            attributes=attributes,
            ordering_key=original.ordering_key,
        )

    def redriven_to(self, new_id: str) -> DeadLetter:
        """This dead letter, recording the id of its redriven copy."""
        return replace(self, redriven_as=new_id)


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
    """The dead-letter queue of ``transport``; ConfigurationError when it has none.

    Each broker's folder has a ``dlq`` module with ``dead_letter_queue(transport)``;
    it is found by the transport's own package, so adding a broker adds no branch
    here and this module imports no broker.
    """
    defined_in = type(transport).__module__
    is_package = hasattr(sys.modules.get(defined_in), "__path__")
    package = defined_in if is_package else defined_in.rpartition(".")[0]
    module = None
    if package:  # a transport defined in a top-level module has no package to look in
        try:
            module = importlib.import_module(f"{package}.dlq")
        except ModuleNotFoundError as e:
            if e.name != f"{package}.dlq":
                raise  # the dlq module exists, but something it imports does not
    build = getattr(module, "dead_letter_queue", None)
    if build is None:
        raise ConfigurationError(f"the {transport.name!r} transport has no dead-letter queue")
    queue: DeadLetterQueue = build(transport)
    return queue


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


def publish_copies(
    transport: Transport, letters: Sequence[DeadLetter], copies: Sequence[Message] | None = None
) -> Letters:
    """Publish the redriven copies (``letter.redriven()`` unless ``copies`` are given,
    one per letter); raises (and so deletes nothing) if any failed. Returns the
    letters with the new id of each copy in ``redriven_as``."""
    if not letters:
        return []
    sent = list(copies) if copies is not None else [letter.redriven() for letter in letters]
    ids = transport.publish(sent)
    return [letter.redriven_to(new_id) for letter, new_id in zip(letters, ids, strict=True)]


class BrowsableDeadLetterQueue:
    """A dead-letter queue that can be read without consuming it (a list, a stream).

    Subclasses say how to read their letters, oldest first, and how to delete some;
    listing, showing, redriving (copy first, then delete) and purging are the same
    for all of them.
    """

    #: Letters redriven or purged per publish/delete round trip.
    page = 200

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def _letters(self) -> Iterable[DeadLetter]:
        raise NotImplementedError

    def _delete(self, letters: Letters) -> None:
        raise NotImplementedError

    def list(self, limit: int = 100, selection: Selection | None = None) -> Letters:
        return take(self._letters(), selection or ALL, limit)

    def show(self, message_id: str) -> DeadLetter | None:
        # Either the message id or the DLQ's own entry id.
        for letter in self._letters():
            if message_id in (letter.id, letter.message.receipt):
                return letter
        return None

    def redrive(
        self, selection: Selection, *, limit: int | None = None, dry_run: bool = False
    ) -> Letters:
        chosen = take(self._letters(), selection, limit)
        if dry_run:
            return chosen
        done: Letters = []
        for batch in self._pages(chosen):
            copied = publish_copies(self.transport, batch)  # copy first ...
            self._delete(batch)  # ... then delete
            done += copied
        return done

    def purge(
        self, selection: Selection, *, limit: int | None = None, dry_run: bool = False
    ) -> Letters:
        chosen = take(self._letters(), selection, limit)
        if not dry_run:
            for batch in self._pages(chosen):
                self._delete(batch)
        return chosen

    def _pages(self, letters: Letters) -> Iterator[Letters]:
        for start in range(0, len(letters), self.page):
            yield letters[start : start + self.page]


__all__ = [
    "ALL",
    "REDRIVEN_FROM_ATTR",
    "BrowsableDeadLetterQueue",
    "DeadLetter",
    "DeadLetterQueue",
    "Letters",
    "Selection",
    "for_transport",
]
