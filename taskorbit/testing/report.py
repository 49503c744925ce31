"""What a test run did: one :class:`Delivery` per message handed to the pipeline.

A delivery ends in one :class:`Fate`. Three of them are the settlement invariant's
doors (docs/semantics.md): ``acked``, ``retried`` (handed back with a delay and the
next attempt number) and ``dead_lettered``. The other two are what production does
without running the handler: ``duplicate`` (its idempotency key was done already:
acked unrun) and ``deferred`` (handed back without using an attempt: its key is in
progress elsewhere, or the idempotency store failed).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

from taskorbit.message import Message


class Fate(str, enum.Enum):
    """What became of one delivery. Compares equal to its value (``"acked"``...)."""

    ACKED = "acked"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"
    DUPLICATE = "duplicate"
    DEFERRED = "deferred"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Delivery:
    """One message handed to the pipeline, and what became of it.

    ``message`` is a copy as it was delivered (its ``attempt`` is this delivery's,
    not the next one's). ``payload`` is the body decoded into the handler's type,
    or the raw body when it does not decode. ``delay`` is the wait before the next
    delivery (``retried``, ``deferred``); ``reason`` says why it was retried,
    deferred or dead-lettered; ``error`` is what the handler or the decoder raised.
    ``at`` is the test run's clock (``run.now``) when the delivery happened.
    """

    message: Message
    payload: Any
    fate: Fate
    delay: float = 0.0
    reason: str = ""
    error: BaseException | None = None
    at: float = 0.0

    @property
    def topic(self) -> str:
        return self.message.topic

    @property
    def attempt(self) -> int:
        return self.message.attempt

    @property
    def id(self) -> str:
        return self.message.id


class Report(Sequence[Delivery]):
    """Deliveries in the order they happened, with filters for each fate.

    >>> report = run.drain()                                    # doctest: +SKIP
    >>> report.fates == ["retried", "retried", "acked"]         # doctest: +SKIP
    True
    >>> [d.delay for d in report.retried]                       # doctest: +SKIP
    [1.0, 2.0]
    """

    def __init__(self, deliveries: Sequence[Delivery] = ()) -> None:
        self._deliveries = tuple(deliveries)

    @overload
    def __getitem__(self, index: int) -> Delivery: ...
    @overload
    def __getitem__(self, index: slice) -> Report: ...

    def __getitem__(self, index: int | slice) -> Delivery | Report:
        if isinstance(index, slice):
            return Report(self._deliveries[index])
        return self._deliveries[index]

    def __len__(self) -> int:
        return len(self._deliveries)

    def __iter__(self) -> Iterator[Delivery]:
        return iter(self._deliveries)

    def __repr__(self) -> str:
        parts = ", ".join(f"{d.topic} #{d.attempt} {d.fate}" for d in self._deliveries)
        return f"Report([{parts}])"

    def of(self, fate: Fate | str) -> list[Delivery]:
        """The deliveries that ended in ``fate``."""
        wanted = Fate(fate)
        return [d for d in self._deliveries if d.fate is wanted]

    def for_topic(self, topic: str) -> Report:
        """Only the deliveries of ``topic``."""
        return Report([d for d in self._deliveries if d.topic == topic])

    @property
    def acked(self) -> list[Delivery]:
        return self.of(Fate.ACKED)

    @property
    def retried(self) -> list[Delivery]:
        return self.of(Fate.RETRIED)

    @property
    def dead_lettered(self) -> list[Delivery]:
        return self.of(Fate.DEAD_LETTERED)

    @property
    def duplicates(self) -> list[Delivery]:
        return self.of(Fate.DUPLICATE)

    @property
    def deferred(self) -> list[Delivery]:
        return self.of(Fate.DEFERRED)

    @property
    def fates(self) -> list[Fate]:
        """Each delivery's fate, in order: ``["retried", "acked"]`` compares equal."""
        return [d.fate for d in self._deliveries]

    @property
    def payloads(self) -> list[Any]:
        """Each delivery's decoded payload, in order."""
        return [d.payload for d in self._deliveries]


@dataclass(frozen=True)
class Queued:
    """A message waiting in a test run: published (or handed back) and not yet run.

    ``due_in`` is how many seconds of the run's clock remain before it runs (0 when
    it runs at the next ``drain()`` or ``advance(0)``).
    """

    message: Message
    payload: Any
    due_in: float

    @property
    def topic(self) -> str:
        return self.message.topic

    @property
    def attempt(self) -> int:
        return self.message.attempt
