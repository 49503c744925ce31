"""The Redis Streams dead-letter stream (``<stream>:dlq`` by default).

Entries are read with XRANGE (oldest first); redrive XADDs the copy to the main
stream through the transport's own ``publish`` and only then XDELs the DLQ entry.
"""

from __future__ import annotations

from collections.abc import Iterator

from taskorbit.dlq import DeadLetter, Letters
from taskorbit.dlq.browsable import BrowsableDeadLetterQueue
from taskorbit.transports._redis_connect import translated
from taskorbit.transports.redis_streams import RedisStreamsTransport


class RedisStreamsDeadLetterQueue(BrowsableDeadLetterQueue):
    transport: RedisStreamsTransport

    def __init__(self, transport: RedisStreamsTransport) -> None:
        super().__init__(transport)
        self.client = transport.client
        self.key = transport.dlq_stream

    def _letters(self) -> Iterator[DeadLetter]:
        start = "-"
        while True:
            page = self.transport.dead_letters(count=self.page, start=start)
            for message in page:
                yield DeadLetter.of(message)
            if len(page) < self.page:
                return
            start = "(" + str(page[-1].receipt)  # exclusive: after the last entry seen

    def _delete(self, letters: Letters) -> None:
        if letters:
            with translated():
                self.client.xdel(self.key, *(str(x.message.receipt) for x in letters))
