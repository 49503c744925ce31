"""The Redis Streams dead-letter stream (``<stream>:dlq`` by default).

Entries are read with XRANGE (oldest first); redrive XADDs the copy to the main
stream through the transport's own ``publish`` and only then XDELs the DLQ entry.
"""

from __future__ import annotations

from collections.abc import Iterator

from taskorbit.dlq import ALL, DeadLetter, Letters, Selection, publish_copies, take
from taskorbit.transports._redis_connect import translated
from taskorbit.transports.redis_streams import RedisStreamsTransport

_PAGE = 200


class RedisStreamsDeadLetterQueue:
    def __init__(self, transport: RedisStreamsTransport) -> None:
        self.transport = transport
        self.client = transport.client
        self.key = transport.dlq_stream

    def _letters(self) -> Iterator[DeadLetter]:
        start = "-"
        while True:
            page = self.transport.dead_letters(count=_PAGE, start=start)
            for message in page:
                yield DeadLetter.of(message)
            if len(page) < _PAGE:
                return
            start = "(" + str(page[-1].receipt)  # exclusive: after the last entry seen

    def list(self, limit: int = 100, selection: Selection | None = None) -> Letters:
        return take(self._letters(), selection or ALL, limit)

    def show(self, message_id: str) -> DeadLetter | None:
        # Either the message id or the DLQ entry id.
        for letter in self._letters():
            if message_id in (letter.id, letter.message.receipt):
                return letter
        return None

    def redrive(
        self, selection: Selection, *, limit: int | None = None, dry_run: bool = False
    ) -> Letters:
        chosen = take(self._letters(), selection, limit)
        if not dry_run:
            for start in range(0, len(chosen), _PAGE):
                batch = chosen[start : start + _PAGE]
                publish_copies(self.transport, batch)  # copy first ...
                self._delete(batch)  # ... then delete
        return chosen

    def purge(
        self, selection: Selection, *, limit: int | None = None, dry_run: bool = False
    ) -> Letters:
        chosen = take(self._letters(), selection, limit)
        if not dry_run:
            for start in range(0, len(chosen), _PAGE):
                self._delete(chosen[start : start + _PAGE])
        return chosen

    def _delete(self, letters: Letters) -> None:
        if letters:
            with translated():
                self.client.xdel(self.key, *(str(x.message.receipt) for x in letters))
