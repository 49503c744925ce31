"""What a handler may learn about the message it runs: its second parameter."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from taskorbit.message import Message


@dataclass(slots=True)
class Context:
    """Per-run facts for a handler that asks for a second parameter.

    ``cancelled`` becomes true when the worker is shutting down; a long handler
    may check it and return early (an unfinished message comes back through the
    broker). ``deadline`` is the ``time.monotonic()`` by which the worker wants
    the handler done at shutdown, ``None`` while it is running normally.
    """

    message: Message
    _stopping: threading.Event = field(repr=False)
    _deadline: list[float | None] = field(repr=False)

    @property
    def message_id(self) -> str:
        """The broker's id of the message (what ``delay`` returned)."""
        return self.message.id

    @property
    def topic(self) -> str:
        """The topic the message was published to."""
        return self.message.topic

    @property
    def attributes(self) -> dict[str, str]:
        """The message's attributes: ``attributes=`` given at publish, the
        idempotency key, trace context."""
        return self.message.attributes

    @property
    def attempt(self) -> int:
        """1 on the first run, one more on every run after it (docs/retries.md)."""
        return self.message.attempt

    @property
    def cancelled(self) -> bool:
        """True once the worker is shutting down: a long handler may return early."""
        return self._stopping.is_set()

    @property
    def deadline(self) -> float | None:
        """The ``time.monotonic()`` by which shutdown wants the handler done, else None."""
        return self._deadline[0]
