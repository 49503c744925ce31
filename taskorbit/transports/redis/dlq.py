"""The Redis Streams dead-letter stream (``<stream>:dlq`` by default).

Entries are read with XRANGE (oldest first). Redrive differs from the other
queues: a dead-letter entry records the consumer group that dead-lettered it, and
the copy goes back to that group's retry stream, not to the shared stream every
group reads (which would run it again in groups that had handled it). The copy and
the delete are one script per batch, copy first; the copy is the entry as stored
(so a message that was malformed goes back byte for byte), except that it is a new
message: its id is its new entry id, and its attributes name the dead letter's id
in ``taskorbit-redriven-from``. Entries without a group (written before groups were
recorded) go to the shared stream.
"""

from __future__ import annotations

from collections.abc import Iterator

from taskorbit.dlq import (
    REDRIVEN_FROM_ATTR,
    BrowsableDeadLetterQueue,
    DeadLetter,
    Letters,
    Selection,
    take,
)
from taskorbit.errors import ConfigurationError
from taskorbit.transports.base import Transport
from taskorbit.transports.redis.client import translated
from taskorbit.transports.redis.streams import RedisStreamsTransport


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

    def redrive(
        self, selection: Selection, *, limit: int | None = None, dry_run: bool = False
    ) -> Letters:
        """Copy each matching letter back to its group, then delete it (one script).

        The report of an entry trimmed before it was acked has no topic and no body:
        there is nothing to redrive, so it is neither chosen nor deleted (purge it)."""
        chosen = take((x for x in self._letters() if _has_content(x)), selection, limit)
        if dry_run:
            return chosen
        done: dict[str, str] = {}  # dead-letter entry id -> the copy's entry id
        for batch in self._pages(chosen):
            messages = [x.message for x in batch]
            done.update(self.transport.redrive_dead_letters(messages, link_attr=REDRIVEN_FROM_ATTR))
        # A letter deleted meanwhile (a concurrent purge) was not redriven.
        return [
            x.redriven_to(done[str(x.message.receipt)])
            for x in chosen
            if str(x.message.receipt) in done
        ]


def _has_content(letter: DeadLetter) -> bool:
    return bool(letter.message.topic or letter.message.body)


def dead_letter_queue(transport: Transport) -> RedisStreamsDeadLetterQueue:
    """The dead-letter queue of a Redis transport (what ``taskorbit dlq`` uses)."""
    if not isinstance(transport, RedisStreamsTransport):
        raise ConfigurationError(
            "Redis Pub/Sub is at-most-once and keeps no dead letters; "
            "use Redis Streams for a dead-letter queue"
        )
    return RedisStreamsDeadLetterQueue(transport)
