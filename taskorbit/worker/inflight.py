"""Every message the worker holds, from the moment a transport hands it over to its
one settlement (ack, hand-back with a delay, dead letter).

The settlement invariant (docs/semantics.md) is kept here: a message is *opened*
when the poller receives it and *closed* exactly once, by whichever path settles
it. A second close is refused, so a bug that settles one message twice cannot
reach the broker twice; a message the runtime lost track of shows up as still
open (``Orbit.stats()["in_flight"]``, and the settlement ledger test).

It also remembers, per message, the idempotency key the worker claimed for it, so
that every way out of the worker (done, failed, handed back, dead-lettered,
dropped) completes or releases that claim, never neither.

Both dicts are keyed by ``id(message)`` and changed by single dict operations,
which are atomic under the GIL: the hot path takes no lock.
"""

from __future__ import annotations

from collections.abc import Iterable

from taskorbit.message import Message


class InFlight:
    def __init__(self) -> None:
        self._open: dict[int, Message] = {}
        self._claims: dict[int, str] = {}  # id(message) -> idempotency key it claimed

    def open(self, messages: Iterable[Message]) -> None:
        self._open.update({id(m): m for m in messages})

    def close(self, message: Message) -> bool:
        """Mark ``message`` settled; False if it was not open (already settled)."""
        return self._open.pop(id(message), None) is not None

    def holds(self, message: Message) -> bool:
        return id(message) in self._open

    def claimed(self, message: Message, key: str) -> None:
        """The worker claimed ``key`` for ``message``; it must complete or release it."""
        self._claims[id(message)] = key

    def take_claim(self, message: Message) -> str | None:
        """The key claimed for ``message``, forgotten here: the caller settles it."""
        return self._claims.pop(id(message), None)

    def __len__(self) -> int:
        return len(self._open)

    @property
    def claims(self) -> int:
        return len(self._claims)

    def messages(self) -> list[Message]:
        return list(self._open.values())
