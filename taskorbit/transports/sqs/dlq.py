"""The SQS dead-letter queue (the transport's ``dlq_url``).

SQS has no way to look at a message without receiving it, so ``list`` and
``show`` receive the DLQ's messages (making them invisible for a few seconds) and
release them again at once. ``redrive`` sends each copy to the main queue with
SendMessageBatch and deletes the DLQ message only after its copy was accepted. A
copy carries the dead letter's id in ``taskorbit-redriven-from`` unless that would
make it one attribute more than SQS carries (10); ``redrive`` still reports the
new id of every copy.
Keep other consumers off the DLQ while running these.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from taskorbit.dlq import ALL, REDRIVEN_FROM_ATTR, DeadLetter, Letters, Selection, publish_copies
from taskorbit.errors import ConfigurationError, TransportError
from taskorbit.message import Message
from taskorbit.transports.sqs import SQSTransport
from taskorbit.transports.sqs.wire import MAX_ATTRIBUTES, outgoing_attributes

_AWS_HOST = re.compile(r"^sqs\.([a-z0-9-]+)\.amazonaws\.com")
# Long enough to finish a page of work before the received messages reappear.
_PEEK_VISIBILITY_S = 30.0


def reader_for(queue_url: str) -> SQSTransport:
    """An SQSTransport that reads ``queue_url``, pointed at the same endpoint.

    An AWS queue URL names its region; any other URL (an emulator's) is its own
    endpoint, unless AWS_ENDPOINT_URL_SQS says otherwise.
    """
    host = urlsplit(queue_url)
    aws = _AWS_HOST.match(host.netloc)
    if aws:
        return SQSTransport(queue_url, region_name=aws.group(1), wait_time_s=1)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_SQS") or f"{host.scheme}://{host.netloc}"
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    return SQSTransport(
        queue_url,
        endpoint_url=endpoint,
        region_name=region,
        wait_time_s=1,
        visibility_timeout=_PEEK_VISIBILITY_S,
    )


class SQSDeadLetterQueue:
    def __init__(self, transport: SQSTransport, *, reader: SQSTransport | None = None) -> None:
        if transport.dlq_url is None:
            raise ConfigurationError(
                "this SQSTransport has no dlq_url: SQS's RedrivePolicy keeps dead letters in "
                "a queue taskorbit was not told about; pass dlq_url= to SQSTransport"
            )
        self.transport = transport
        self.reader = reader or reader_for(transport.dlq_url)

    def _sweep(
        self, selection: Selection, limit: int | None, act: Callable[[Letters], Letters] | None
    ) -> Letters:
        """Receive the DLQ page by page; ``act`` on the matches (it returns them as
        done), release the rest.

        Everything received stays invisible until the sweep ends, so no message is
        seen twice in one sweep.
        """
        chosen: list[DeadLetter] = []
        held: list[Message] = []
        try:
            while limit is None or len(chosen) < limit:
                page = self.reader.receive(10, timeout=1.0)
                if not page:
                    break
                matched: list[DeadLetter] = []
                for message in page:
                    letter = DeadLetter.of(message)
                    room = limit is None or len(chosen) + len(matched) < limit
                    if room and selection.matches(letter):
                        matched.append(letter)
                    else:
                        held.append(message)
                if act is None:
                    held += [x.message for x in matched]
                else:
                    matched = act(matched)
                chosen += matched
        finally:
            # Released in place, never re-sent as copies: a copy would get a new
            # MessageId, which ``show`` and ``redrive`` select by.
            with contextlib.suppress(Exception):
                self.reader.release(held)
        return chosen

    def list(self, limit: int = 100, selection: Selection | None = None) -> Letters:
        return self._sweep(selection or ALL, limit, None)

    def show(self, message_id: str) -> DeadLetter | None:
        found = self._sweep(Selection.of([message_id]), 1, None)
        return found[0] if found else None

    def redrive(
        self, selection: Selection, *, limit: int | None = None, dry_run: bool = False
    ) -> Letters:
        return self._sweep(selection, limit, None if dry_run else self._move)

    def purge(
        self, selection: Selection, *, limit: int | None = None, dry_run: bool = False
    ) -> Letters:
        return self._sweep(selection, limit, None if dry_run else self._delete)

    def _move(self, letters: Letters) -> Letters:
        copies = [_fitting(x.redriven()) for x in letters]
        moved = publish_copies(self.transport, letters, copies)  # copy first ...
        self._delete(letters)  # ... then delete
        return moved

    def _delete(self, letters: Letters) -> Letters:
        failures = self.reader.ack([x.message for x in letters])
        if failures:
            raise TransportError(
                f"{len(failures)} dead letters could not be deleted from the DLQ "
                f"(their copies are in the main queue): {failures[0].reason}"
            )
        return letters


def _fitting(copy: Message) -> Message:
    """``copy`` without its redriven-from link when the link is the one attribute
    too many for SQS: the message must go back even if the link cannot."""
    _, wire = outgoing_attributes(copy, not_before=None, attempts_used=None)
    if len(wire) > MAX_ATTRIBUTES:
        del copy.attributes[REDRIVEN_FROM_ATTR]
    return copy


def dead_letter_queue(transport: SQSTransport) -> SQSDeadLetterQueue:
    """The dead-letter queue of ``transport`` (what ``taskorbit dlq`` uses)."""
    return SQSDeadLetterQueue(transport)
