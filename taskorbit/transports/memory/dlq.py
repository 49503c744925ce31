"""The in-memory transport's dead letters (``MemoryTransport.dead_letters``).

Useful inside one process (tests, an embedded worker); a ``taskorbit dlq`` run
from another process sees a fresh, empty transport.
"""

from __future__ import annotations

import contextlib

from taskorbit.dlq import BrowsableDeadLetterQueue, DeadLetter, Letters
from taskorbit.transports.memory import MemoryTransport


class MemoryDeadLetterQueue(BrowsableDeadLetterQueue):
    transport: MemoryTransport

    def __init__(self, transport: MemoryTransport) -> None:
        super().__init__(transport)

    def _letters(self) -> list[DeadLetter]:
        # A copy of the list: list() of a list is atomic under the GIL, and the
        # worker may append meanwhile.
        return [DeadLetter.of(m) for m in list(self.transport.dead_letters)]

    def _delete(self, letters: Letters) -> None:
        for letter in letters:
            with contextlib.suppress(ValueError):  # removed by someone else meanwhile
                self.transport.dead_letters.remove(letter.message)


def dead_letter_queue(transport: MemoryTransport) -> MemoryDeadLetterQueue:
    """The dead-letter queue of ``transport`` (what ``taskorbit dlq`` uses)."""
    return MemoryDeadLetterQueue(transport)
