"""Dead-letter queues that can be read without consuming them (a list, a stream).

Subclasses say how to read their letters, oldest first, and how to delete some;
listing, showing, redriving (copy first, then delete) and purging are the same for
all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from taskorbit.dlq import ALL, DeadLetter, Letters, Selection, publish_copies, take
from taskorbit.transports.base import Transport


class BrowsableDeadLetterQueue:
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
        if not dry_run:
            for batch in self._pages(chosen):
                publish_copies(self.transport, batch)  # copy first ...
                self._delete(batch)  # ... then delete
        return chosen

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
