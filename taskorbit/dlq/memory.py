"""The in-memory transport's dead letters (``MemoryTransport.dead_letters``).

Useful inside one process (tests, an embedded worker); a ``taskorbit dlq`` run
from another process sees a fresh, empty transport.
"""

from __future__ import annotations

import contextlib

from taskorbit.dlq import ALL, DeadLetter, Letters, Selection, publish_copies, take
from taskorbit.transports.memory import MemoryTransport


class MemoryDeadLetterQueue:
    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport

    def _letters(self) -> list[DeadLetter]:
        # A copy of the list: list() of a list is atomic under the GIL, and the
        # worker may append meanwhile.
        return [DeadLetter.of(m) for m in list(self.transport.dead_letters)]

    def list(self, limit: int = 100, selection: Selection | None = None) -> Letters:
        return take(self._letters(), selection or ALL, limit)

    def show(self, message_id: str) -> DeadLetter | None:
        found = take(self._letters(), Selection.of([message_id]), 1)
        return found[0] if found else None

    def redrive(
        self, selection: Selection, *, limit: int | None = None, dry_run: bool = False
    ) -> Letters:
        chosen = take(self._letters(), selection, limit)
        if not dry_run:
            publish_copies(self.transport, chosen)  # copy first ...
            self._remove(chosen)  # ... then delete
        return chosen

    def purge(
        self, selection: Selection, *, limit: int | None = None, dry_run: bool = False
    ) -> Letters:
        chosen = take(self._letters(), selection, limit)
        if not dry_run:
            self._remove(chosen)
        return chosen

    def _remove(self, letters: Letters) -> None:
        for letter in letters:
            with contextlib.suppress(ValueError):  # removed by someone else meanwhile
                self.transport.dead_letters.remove(letter.message)
