"""Redis Streams: a durable, at-least-once transport on one stream and consumer group.

Keys (``stream="taskorbit"``, ``group="g"``):

=========================  ==========================================================
``taskorbit``              the shared stream; one entry per published message
``taskorbit:delayed``      sorted set of published messages waiting for their ETA
``taskorbit:retry:g``      group g's retry stream: its hand-backs, due now
``taskorbit:delayed:g``    group g's delayed set: its hand-backs with a delay
``taskorbit:dlq``          dead-letter stream: the original fields plus reason,
                           attempts, time and group
=========================  ==========================================================

Why a retry stream per group: several consumer groups may read one stream (each is
a subscriber). A hand-back (``nack``) re-added to the shared stream would run again
in every group, so it goes to streams only its own group reads; a consumer reads
the shared stream and its group's retry stream in one XREADGROUP. A published
message with a not-before is for every group, so it waits in the shared delayed set.

An entry's fields: ``topic``, ``body``, ``attrs`` (JSON, only when there are
attributes), ``attempt`` (only on handed-back entries: the attempt the next delivery
is), ``id`` (the message id, kept across hand-backs), ``okey`` (ordering key).
Anything else a producer wrote is ignored; an entry whose fields cannot be read
(no topic, ``attrs`` that are not a JSON object of strings, an attempt of ``"abc"``)
is received with ``Message.malformed`` naming the field, so that the worker
dead-letters it while its batch runs.

Attempt numbers: a received message's attempt is the carried ``attempt`` (1 if
absent) plus the entry's delivery count in the pending list minus one. A worker that
dies holding an entry leaves it pending; the next consumer claims it with
XAUTOCLAIM, which raises the delivery count, so a message that crashes the process
every time still reaches the runtime's retry limit and the DLQ.

See docs/transports/redis.md for the full semantics and configuration.
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, NamedTuple

import msgspec
import redis

from taskorbit.errors import ConfigurationError, TransportConnectionError, TransportError
from taskorbit.message import (
    DLQ_ATTEMPTS_ATTR,
    DLQ_REASON_ATTR,
    DLQ_TIME_ATTR,
    NOT_BEFORE_ATTR,
    Message,
)
from taskorbit.transports.base import AckFailure, Transport
from taskorbit.transports.redis import scripts
from taskorbit.transports.redis.client import (
    Reconnector,
    connect,
    endpoint,
    is_busy_group,
    is_missing_group,
    log,
    max_block_s,
    ping,
    translated,
)

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder(dict[str, str]).decode

#: The consumer group that dead-lettered a message, on the messages that
#: :meth:`RedisStreamsTransport.dead_letters` returns.
DLQ_GROUP_ATTR = "taskorbit-dlq-group"

# Dead-letter entries carry these fields beside the original ones.
_DLQ_FIELDS = {
    b"dlq-reason": DLQ_REASON_ATTR,
    b"dlq-attempts": DLQ_ATTEMPTS_ATTR,
    b"dlq-time": DLQ_TIME_ATTR,
    b"dlq-group": DLQ_GROUP_ATTR,
}
# Members per delayed-set move and ids per extend script call: bounded so that one
# script never blocks the server for long.
_SCRIPT_CHUNK = 500


def default_consumer_name() -> str:
    """hostname-pid-random: unique per transport, readable in XINFO CONSUMERS."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def retry_stream_of(stream: str, group: str) -> str:
    """The stream that holds consumer group ``group``'s hand-backs of ``stream``."""
    return f"{stream}:retry:{group}"


class EntryReceipt(NamedTuple):
    """The receipt of an entry that is not simply pending in the shared stream: one
    in the group's retry stream, or one that was gone (trimmed or deleted) when
    XAUTOCLAIM came across it. An entry of the shared stream has its entry id, a
    plain str, as receipt: cheaper on the hot path."""

    stream: str
    entry_id: str
    gone: bool = False


class RedisStreamsTransport(Transport):
    """Messages in a Redis stream, read through a consumer group.

    >>> t = RedisStreamsTransport(url="redis://localhost:6379/0", stream="orders")
    """

    name: ClassVar[str] = "redis-streams"
    durable: ClassVar[bool] = True
    acknowledges: ClassVar[bool] = True
    needs_lease: ClassVar[bool] = True
    max_batch: ClassVar[int] = 1000

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        stream: str = "taskorbit",
        group: str = "taskorbit",
        consumer: str | None = None,
        dlq_stream: str | None = None,
        delayed_key: str | None = None,
        lease_s: float = 30.0,
        claim_idle_s: float | None = None,
        claim_interval_s: float | None = None,
        maxlen: int | None = None,
        max_age_s: float | None = None,
        delete_acked: bool = True,
        move_interval_s: float = 1.0,
    ) -> None:
        if lease_s <= 0:
            raise ConfigurationError(f"lease_s must be greater than 0, got {lease_s!r}")
        claim_idle_s = lease_s if claim_idle_s is None else claim_idle_s
        if claim_idle_s < lease_s:
            raise ConfigurationError(
                "claim_idle_s must be >= lease_s, or entries still held by a live worker "
                f"would be claimed by others (got claim_idle_s={claim_idle_s}, lease_s={lease_s})"
            )
        if maxlen is not None and maxlen <= 0:
            raise ConfigurationError(f"maxlen must be greater than 0 or None, got {maxlen!r}")
        if max_age_s is not None and max_age_s <= 0:
            raise ConfigurationError(f"max_age_s must be greater than 0 or None, got {max_age_s!r}")
        if maxlen is not None and max_age_s is not None:
            raise ConfigurationError("trim by maxlen= or by max_age_s=, not both")
        self.client = connect(url, client)
        self._owns_client = client is None  # a client the user passed in stays open
        self.stream = stream
        self.group = group
        self.consumer = consumer or default_consumer_name()
        self.dlq_stream = dlq_stream or f"{stream}:dlq"
        self.delayed_key = delayed_key or f"{stream}:delayed"
        # This group's own hand-backs: only its consumers read these two keys.
        self.retry_stream = retry_stream_of(stream, group)
        self.group_delayed_key = f"{stream}:delayed:{group}"
        self._retry_stream_b = self.retry_stream.encode()
        self.lease_s = lease_s
        self.claim_idle_s = claim_idle_s
        # Claiming more often than a fraction of the idle time gains nothing: nothing
        # becomes claimable faster than it goes idle.
        self.claim_interval_s = claim_interval_s or min(claim_idle_s / 2, 5.0)
        self.maxlen = maxlen
        self.max_age_s = max_age_s
        self.delete_acked = delete_acked
        self.move_interval_s = move_interval_s
        self._block_cap_s = max_block_s(self.client)
        self._scripts = {
            name: self.client.register_script(getattr(scripts, name))
            for name in (
                "PUBLISH",
                "PUBLISH_BODIES",
                "ACK",
                "MOVE_DUE",
                "REQUEUE",
                "DEAD_LETTER",
                "CLAIM_IDLE",
                "EXTEND",
                "REDRIVE",
            )
        }
        self._group_ready = False
        # Monotonic times of the next delayed-set move and the next idle claim; the
        # first receive does both at once, so a restarted worker recovers at start.
        self._next_move_at = 0.0
        self._next_claim_at = 0.0
        self._claim_cursor = "0-0"
        self._retry_claim_cursor = "0-0"
        # Entries one XREADGROUP delivered beyond what receive was asked for (COUNT
        # applies to each of its two streams); handed over first by the next
        # receive. Touched only by the poller thread and by close().
        self._carried: list[Message] = []
        self._reconnector = Reconnector(
            f"redis-streams consumer {self.consumer}", endpoint(self.client)
        )

    # -- where -----------------------------------------------------------------

    def check(self, timeout: float) -> None:
        """PING the server (on a connection of its own, within ``timeout``)."""
        ping(self.client, timeout)

    def describe(self) -> str:
        """``redis://:***@host:6379/0 stream taskorbit group taskorbit``."""
        return f"{endpoint(self.client)} stream {self.stream} group {self.group}"

    # -- receiving -------------------------------------------------------------

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        if max_messages <= 0:
            return []
        try:
            messages = self._receive(max_messages, timeout)
        except TransportConnectionError as exc:
            # Whatever XREADGROUP delivered before the drop sits in our pending list
            # and comes back through XAUTOCLAIM after claim_idle_s: nothing is lost.
            self._reconnector.failed(exc, budget_s=timeout)
            return []
        except TransportError as exc:
            if not is_missing_group(exc):
                raise
            # The stream or group was deleted under us (FLUSHALL, DEL): start again.
            log.warning("consumer group %s on %s vanished; recreating it", self.group, self.stream)
            self._group_ready = False
            return []
        self._reconnector.succeeded()
        return messages

    def _receive(self, max_messages: int, timeout: float) -> list[Message]:
        self._ensure_group()
        now = time.monotonic()
        if now >= self._next_move_at:
            self._move_due()
        messages = self._take_carried(max_messages) if self._carried else []
        if now >= self._next_claim_at and len(messages) < max_messages:
            messages += self._claim_idle(max_messages - len(messages))
        wanted = max_messages - len(messages)
        if wanted > 0:
            # Never block when we already have something to hand over; otherwise
            # wake in time for the next delayed-set move.
            block_s = 0.0 if messages else min(timeout, self._block_cap_s, self._until_move())
            messages.extend(self._read_new(wanted, block_s))
        return messages

    def _until_move(self) -> float:
        return max(0.0, self._next_move_at - time.monotonic())

    def _read_new(self, count: int, block_s: float) -> list[Message]:
        """XREADGROUP on the shared stream and the group's retry stream at once."""
        block_ms = int(block_s * 1000)
        with translated():
            reply = self.client.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: ">", self.retry_stream: ">"},
                count=count,
                block=block_ms if block_ms > 0 else None,
            )
        received_at = time.monotonic()
        messages = []
        for stream, entries in _stream_replies(reply):
            retry = self.retry_stream if stream == self._retry_stream_b else None
            for entry_id, fields in entries:
                messages.append(_to_message(entry_id, fields, 1, received_at, retry))
        if len(messages) > count:
            # Both streams had entries: keep the surplus for the next receive rather
            # than hand the runtime more than it has room for.
            self._carried.extend(messages[count:])
            del messages[count:]
        return messages

    def _take_carried(self, count: int) -> list[Message]:
        """Up to ``count`` carried entries. Ones that waited here long (the ring was
        full) get their idle time reset first, since the runtime's lease keeper
        starts counting only now; one that another consumer claimed meanwhile is
        theirs and is dropped from our hands."""
        taken = self._carried[:count]
        now = time.monotonic()
        stale = [m for m in taken if now - m.received_at > self.lease_s / 4]
        if stale:
            kept = set(map(_text, self._extend(stale)))
            lost = {id(m) for m in stale if _locate(self.stream, m.receipt)[1] not in kept}
            taken = [m for m in taken if id(m) not in lost]
        del self._carried[:count]
        for m in taken:
            m.received_at = now
        return taken

    def _claim_idle(self, count: int) -> list[Message]:
        """Claim entries idle for claim_idle_s in both streams: left by dead
        consumers, or by this consumer's earlier life. They are handed to the runtime
        to be processed. Entries trimmed while pending are reported as malformed
        messages, so that the runtime dead-letters (and logs) them."""
        with translated():
            reply = self._scripts["CLAIM_IDLE"](
                keys=[self.stream, self.retry_stream],
                args=[
                    self.group,
                    self.consumer,
                    int(self.claim_idle_s * 1000),
                    self._claim_cursor,
                    self._retry_claim_cursor,
                    count,
                ],
            )
        received_at = time.monotonic()
        messages: list[Message] = []
        cursors: list[str] = []
        for where, part in ((None, reply[:4]), (self.retry_stream, reply[4:])):
            cursor, entries, counts, gone = part
            cursors.append(_text(cursor))
            for (entry_id, fields), deliveries in zip(entries, counts, strict=True):
                messages.append(_to_message(entry_id, fields, int(deliveries), received_at, where))
            if gone:
                stream = where or self.stream
                log.warning(
                    "%d entries of %s were trimmed or deleted before they were acked; "
                    "reporting them to be dead-lettered",
                    len(gone),
                    stream,
                )
                messages += [_gone_message(stream, _text(i), received_at) for i in gone]
        self._claim_cursor, self._retry_claim_cursor = cursors
        # A full batch means more may be waiting: look again on the next receive.
        self._next_claim_at = time.monotonic() + (
            0.0 if len(messages) >= count else self.claim_interval_s
        )
        if messages:
            log.info(
                "claimed %d idle entries from %s for consumer %s",
                len(messages),
                self.stream,
                self.consumer,
            )
        return messages

    def _move_due(self) -> None:
        """Move due delayed messages into their streams (atomically, in Lua)."""
        while True:
            with translated():
                moved, next_due = self._scripts["MOVE_DUE"](
                    keys=[
                        self.delayed_key,
                        self.stream,
                        self.group_delayed_key,
                        self.retry_stream,
                    ],
                    args=[repr(time.time()), _SCRIPT_CHUNK, self._trim()],
                )
            if moved < _SCRIPT_CHUNK:
                break
        wait = self.move_interval_s
        if next_due is not None:
            wait = min(wait, max(0.0, float(next_due) - time.time()))
        self._next_move_at = time.monotonic() + wait

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        for stream in (self.stream, self.retry_stream):
            try:
                with translated():
                    # Id 0, not $: messages published before the first worker started
                    # count, and so do hand-backs added before the group existed.
                    self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except TransportError as exc:
                if not is_busy_group(exc):
                    raise
        self._group_ready = True

    # -- settling --------------------------------------------------------------

    def ack(self, messages: Sequence[Message]) -> list[AckFailure]:
        """One XACK (and XDEL when ``delete_acked``; always in the retry stream) per
        500 messages, in one script."""
        if not messages:
            return []
        acked = asked = 0
        delete = "1" if self.delete_acked else "0"
        for chunk in _chunks(messages, _SCRIPT_CHUNK):
            shared, retry = _split_receipts(chunk)
            if not shared and not retry:
                continue  # only reports of trimmed entries: nothing is pending
            asked += len(shared) + len(retry)
            with translated():
                acked += self._scripts["ACK"](
                    keys=[self.stream, self.retry_stream],
                    args=[self.group, delete, len(shared), *shared, *retry],
                )
        if acked < asked:
            # Not pending any more: another consumer claimed and acked it after our
            # lease ran out. Nothing to retry, the message was handled.
            log.debug("%d of %d acked entries were no longer pending", asked - acked, asked)
        return []

    def nack(self, messages: Sequence[Message], delay: float = 0.0) -> None:
        """Hand back to this group only, carrying ``message.attempt``: into the
        group's retry stream at once, or through its delayed set when ``delay`` > 0;
        the original is acked in the same script. A malformed entry is copied as
        stored. A report of a trimmed entry has nothing to hand back and is
        dead-lettered instead."""
        if not messages:
            return
        due = "" if delay <= 0 else repr(time.time() + delay)
        delete = "1" if self.delete_acked else "0"
        gone: list[Message] = []
        for chunk in _chunks(messages, _SCRIPT_CHUNK):
            args: list[Any] = [self.group, delete]
            for m in chunk:
                receipt = m.receipt
                if receipt.__class__ is str:
                    args += ["s", receipt, due]
                elif receipt.gone:
                    gone.append(m)
                    continue
                else:
                    args += ["r", receipt.entry_id, due]
                if m.malformed is None:
                    args.append(scripts.encode_member(_fields_of(m, attempt=m.attempt)))
                else:
                    args.append(scripts.new_nonce())  # copy the entry as stored
            if len(args) == 2:
                continue
            with translated():
                _done, lost = self._scripts["REQUEUE"](
                    keys=[self.stream, self.retry_stream, self.group_delayed_key], args=args
                )
            if lost:
                # Malformed entries trimmed while we held them: their reports go on.
                where = {_locate(self.stream, m.receipt)[1]: m.receipt for m in chunk}
                for entry_id in map(_text, lost):
                    stream = _locate(self.stream, where[entry_id])[0]
                    gone.append(_gone_message(stream, entry_id, time.monotonic()))
        for m in gone:
            # Worded as the runtime words the dead letters of malformed messages.
            log.warning("%s: handed back, but there is nothing to hand back", m.malformed)
            self.dead_letter(m, f"malformed message: {m.malformed}")
        if delay > 0:
            # Wake our own mover in time; others find it within move_interval_s.
            self._next_move_at = min(self._next_move_at, time.monotonic() + delay)

    def extend(self, messages: Sequence[Message], seconds: float) -> None:
        """Reset the idle time of held entries (XCLAIM JUSTID to ourselves), which
        keeps them from being claimed for another ``claim_idle_s``. Redis cannot push
        an entry's idle time into the future, so ``seconds`` beyond that is reached
        by the runtime calling again, as it does every third of ``lease_s``."""
        self._extend(messages)

    def _extend(self, messages: Sequence[Message]) -> list[Any]:
        """Extend; the entry ids this consumer still owned and so extended."""
        extended: list[Any] = []
        for chunk in _chunks(messages, _SCRIPT_CHUNK):
            shared, retry = _split_receipts(chunk)
            if not shared and not retry:
                continue
            with translated():
                extended += self._scripts["EXTEND"](
                    keys=[self.stream, self.retry_stream],
                    args=[self.group, self.consumer, len(shared), *shared, *retry],
                )
        return extended

    def dead_letter(self, message: Message, reason: str) -> None:
        """XADD to the dead-letter stream, then XACK the original, in one script. A
        malformed message's entry is copied as stored; the report of a trimmed entry
        writes its id, the reason and the time, all there is left."""
        stream, entry_id, gone = _locate(self.stream, message.receipt)
        fields: list[Any] = [
            "dlq-reason",
            reason,
            "dlq-attempts",
            str(message.attempt),
            "dlq-time",
            repr(time.time()),
            "dlq-group",
            self.group,
        ]
        if gone:
            mode, fields = "gone", ["id", message.id or entry_id, *fields]
        elif message.malformed is not None:
            mode = "raw"
        else:
            mode, fields = "copy", _fields_of(message, attempt=message.attempt) + fields
        delete = "1" if self.delete_acked or stream != self.stream else "0"
        with translated():
            copied = self._scripts["DEAD_LETTER"](
                keys=[stream, self.dlq_stream],
                args=[self.group, delete, entry_id, mode, *fields],
            )
        if not copied:
            log.debug("dead-letter of %s skipped: no longer pending", entry_id)

    # -- publishing ------------------------------------------------------------

    def publish(self, messages: Sequence[Message]) -> list[str]:
        """XADD in batches of 500 through one script call each; messages with a
        future ``not_before`` go to the delayed set instead.

        Returns each message's id as receivers will see it: ``Message.id`` when the
        caller set one, else the stream entry id (or a random id for a message that
        waits in the delayed set)."""
        now = time.time()
        ids: list[str] = [""] * len(messages)
        later = [
            i for i, m in enumerate(messages) if m.not_before is not None and m.not_before > now
        ]
        if later:
            ids_later = self._publish_delayed([messages[i] for i in later])
            for i, message_id in zip(later, ids_later, strict=True):
                ids[i] = message_id
        due = [i for i, m in enumerate(messages) if not ids[i]] if later else range(len(messages))
        for start in range(0, len(due), _SCRIPT_CHUNK):
            chunk = due[start : start + _SCRIPT_CHUNK]
            batch = [messages[i] for i in chunk]
            with translated():
                entry_ids = self._publish_due(batch)
            for i, entry_id in zip(chunk, entry_ids, strict=True):
                ids[i] = messages[i].id or _text(entry_id)
        return ids

    def _publish_due(self, batch: list[Message]) -> list[Any]:
        """XADD one batch in one script call; the stream entry ids in order."""
        topic = batch[0].topic
        if all(_is_plain(m, topic) for m in batch):
            # publish_many's batches: one argument per entry instead of five.
            args: list[Any] = [self._trim(), topic]
            args.extend(m.body for m in batch)
            return self._scripts["PUBLISH_BODIES"](keys=[self.stream], args=args)  # type: ignore[no-any-return]
        args = [self._trim()]
        for m in batch:
            fields = _fields_of(m, attempt=m.attempt)
            args.append(len(fields))
            args.extend(fields)
        return self._scripts["PUBLISH"](keys=[self.stream], args=args)  # type: ignore[no-any-return]

    def _publish_delayed(self, messages: Sequence[Message]) -> list[str]:
        ids = [m.id or uuid.uuid4().hex for m in messages]
        members = {
            scripts.encode_member(_fields_of(m, attempt=m.attempt, id=i)): m.not_before
            for m, i in zip(messages, ids, strict=True)
        }
        with translated():
            self.client.zadd(self.delayed_key, members)  # type: ignore[arg-type]
        return ids

    def _trim(self) -> str:
        """The trim argument of the scripts' XADDs to the shared stream (off by
        default: trimming can drop entries that were never delivered)."""
        if self.maxlen is not None:
            return f"MAXLEN {self.maxlen}"
        if self.max_age_s is not None:
            return f"MINID {int((time.time() - self.max_age_s) * 1000)}-0"
        return ""

    # -- inspection ------------------------------------------------------------

    def dead_letters(self, count: int = 100, start: str = "-") -> list[Message]:
        """The oldest ``count`` dead letters from ``start``; reason, attempts, time
        and group are in the attributes under the reserved ``taskorbit-dlq-*`` names.
        An entry that was malformed when it was dead-lettered is returned with
        ``malformed`` set again and whatever could be read."""
        with translated():
            entries = self.client.xrange(self.dlq_stream, min=start, count=count)
        letters = []
        for entry_id, fields in entries or []:
            letter = _to_message(entry_id, fields, 1, 0.0)
            _add_dlq_attributes(letter.attributes, fields or {})
            letters.append(letter)
        return letters

    def redrive_dead_letters(
        self, letters: Sequence[Message], *, link_attr: str | None = None
    ) -> dict[str, str]:
        """Copy dead letters (as :meth:`dead_letters` returns them) back as stored,
        minus their ``dlq-*`` fields, attempt and id, each into the retry stream of
        the group that dead-lettered it (the shared stream when none is recorded),
        then delete them from the dead-letter stream, in one script per 500. With
        ``link_attr``, the copy's attributes name the letter's message id under it.
        Returns {dead-letter entry id: the copy's new entry id} for the letters
        redriven; a report of a trimmed entry, which has no content, is left in
        place."""
        done: dict[str, str] = {}
        for chunk in _chunks(letters, _SCRIPT_CHUNK):
            targets: list[str] = []
            args: list[Any] = [link_attr or ""]
            for letter in chunk:
                group = letter.attributes.get(DLQ_GROUP_ATTR)
                targets.append(retry_stream_of(self.stream, group) if group else self.stream)
                args += [str(letter.receipt), "" if group else self._trim(), letter.id]
            with translated():
                pairs = self._scripts["REDRIVE"](keys=[self.dlq_stream, *targets], args=args)
            for old, new in zip(pairs[::2], pairs[1::2], strict=True):
                done[_text(old)] = _text(new)
        return done

    def close(self) -> None:
        """Hand back entries read but never handed over; remove this consumer from
        the group where it holds nothing; then disconnect."""
        if self._carried:
            try:
                self.nack(self._carried)
                self._carried = []
            except TransportError as exc:
                log.debug("could not hand back %d carried entries: %s", len(self._carried), exc)
        for stream in (self.stream, self.retry_stream):
            try:
                pending = self.client.xpending_range(
                    stream, self.group, min="-", max="+", count=1, consumername=self.consumer
                )
                if not pending:
                    self.client.xgroup_delconsumer(stream, self.group, self.consumer)
            except redis.RedisError as exc:
                log.debug("could not remove consumer %s from %s: %s", self.consumer, stream, exc)
        if self._owns_client:
            self.client.close()


# -- entry encoding ------------------------------------------------------------


def _fields_of(message: Message, *, attempt: int, id: str | None = None) -> list[Any]:
    """A message as a flat field/value list, the way XADD takes it."""
    fields: list[Any] = ["topic", message.topic, "body", message.body]
    if message.attributes:
        fields += ["attrs", _json_encode(message.attributes)]
    if attempt > 1:
        fields += ["attempt", str(attempt)]
    message_id = id or message.id
    if message_id:
        fields += ["id", message_id]
    if message.ordering_key:
        fields += ["okey", message.ordering_key]
    return fields


def _is_plain(message: Message, topic: str) -> bool:
    """True when the entry is just ``topic`` and ``body`` (see :func:`_fields_of`)."""
    return (
        message.topic == topic
        and not message.attributes
        and message.attempt <= 1
        and not message.id
        and not message.ordering_key
    )


def _to_message(
    entry_id: Any, fields: Any, deliveries: int, received_at: float, retry: str | None = None
) -> Message:
    """A stream entry as a Message; never raises. ``fields`` is a dict (redis-py) or
    a flat list (a Lua reply); ``retry`` names the retry stream the entry is in, or is
    None for the shared stream."""
    if not isinstance(fields, dict):
        fields = _pairs(fields or [])
    text_id = _text(entry_id)
    receipt = text_id if retry is None else EntryReceipt(retry, text_id)
    if len(fields) == 2:
        # Just topic and body, as publish_many writes them. The poller converts whole
        # batches at once while the handler threads wait for the GIL: keep it short.
        try:
            return Message(
                fields[b"topic"].decode(),
                fields[b"body"],
                {},
                text_id,
                max(1, deliveries),
                receipt,
                None,
                None,
                received_at,
            )
        except (KeyError, UnicodeDecodeError):
            pass  # two fields, but not these two: read them carefully below
    return _read_entry(text_id, receipt, fields, deliveries, received_at)


def _read_entry(
    entry_id: str, receipt: Any, fields: dict[Any, Any], deliveries: int, received_at: float
) -> Message:
    """An entry with more than topic and body (attributes, a carried attempt, an id:
    every hand-back): read directly, and carefully (:func:`_read_carefully`) only
    when something in it is not what taskorbit writes."""
    try:
        raw_attrs = fields.get(b"attrs")
        attributes = _json_decode(raw_attrs) if raw_attrs is not None else {}
        carried = fields.get(b"attempt")
        attempt = max(1, deliveries)
        if carried is not None:
            if not carried.isdigit() or int(carried) < 1:
                raise ValueError(carried)
            attempt = int(carried) + attempt - 1
        not_before = attributes.get(NOT_BEFORE_ATTR)
        due = float(not_before) if not_before is not None else None
        if due is not None and not math.isfinite(due):
            raise ValueError(not_before)
        okey = fields.get(b"okey")
        message_id = fields.get(b"id")
        if b"unreadable" in fields:
            raise ValueError("unreadable")
        return Message(
            topic=fields[b"topic"].decode(),
            body=fields[b"body"],
            attributes=attributes,
            id=message_id.decode() if message_id is not None else entry_id,
            attempt=attempt,
            receipt=receipt,
            ordering_key=okey.decode() if okey else None,
            not_before=due,
            received_at=received_at,
        )
    except (KeyError, ValueError, msgspec.MsgspecError):  # UnicodeDecodeError too
        return _read_carefully(entry_id, receipt, fields, deliveries, received_at)


def _read_carefully(
    entry_id: str, receipt: Any, fields: dict[Any, Any], deliveries: int, received_at: float
) -> Message:
    """Every field checked: what cannot be read is named in ``malformed`` (all
    problems, joined by "; "), whatever can be read is kept, and the attempt falls
    back to the delivery count."""
    problems: list[str] = []
    if b"unreadable" in fields:
        problems.append("a delayed-set member not in taskorbit's format (kept as 'unreadable')")
    topic = _text_field(fields, b"topic", problems)
    if topic is None:
        problems.append("field 'topic' is missing")
    body = fields.get(b"body")
    if body is None:
        problems.append("field 'body' is missing")
    attributes = _attributes(fields.get(b"attrs"), problems)
    carried = _carried_attempt(fields.get(b"attempt"), problems)
    not_before = _not_before(attributes.get(NOT_BEFORE_ATTR), problems)
    okey = _text_field(fields, b"okey", problems)
    message_id = _text_field(fields, b"id", problems)
    return Message(
        topic=topic or "",
        body=body if isinstance(body, bytes) else b"",
        attributes=attributes,
        id=message_id or entry_id,
        attempt=carried + max(0, deliveries - 1) if carried else max(1, deliveries),
        receipt=receipt,
        ordering_key=okey or None,
        not_before=not_before,
        received_at=received_at,
        malformed="; ".join(problems) or None,
    )


def _text_field(fields: dict[Any, Any], name: bytes, problems: list[str]) -> str | None:
    raw = fields.get(name)
    if raw is None:
        return None
    try:
        return raw.decode()  # type: ignore[no-any-return]
    except UnicodeDecodeError:
        problems.append(f"field {name.decode()!r} is not UTF-8")
        return raw.decode("utf-8", "replace")  # type: ignore[no-any-return]


def _attributes(raw: bytes | None, problems: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    try:
        return _json_decode(raw)
    except msgspec.MsgspecError as exc:
        problems.append(f"field 'attrs' is not a JSON object of strings ({exc})")
        return {}


def _carried_attempt(raw: bytes | None, problems: list[str]) -> int | None:
    """The ``attempt`` field: digits only, at least 1 (None when absent or invalid)."""
    if raw is None:
        return None
    if raw.isdigit() and int(raw) >= 1:
        return int(raw)
    problems.append(f"field 'attempt' is {_shown(raw)!r}, not a positive integer")
    return None


def _not_before(raw: str | None, problems: list[str]) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        return value
    problems.append(f"attribute {NOT_BEFORE_ATTR!r} is {raw[:40]!r}, not epoch seconds")
    return None


def _add_dlq_attributes(attributes: dict[str, str], fields: dict[Any, Any]) -> None:
    """A dead-letter entry's ``dlq-*`` fields as attributes. A value that ``taskorbit
    dlq`` could not show (a foreign entry's attempts of "many", a time of "soon") is
    left out rather than break the listing."""
    for field, attr in _DLQ_FIELDS.items():
        raw = fields.get(field)
        if raw is None:
            continue
        text = raw.decode("utf-8", "replace")
        if attr == DLQ_ATTEMPTS_ATTR and not text.isdecimal():
            continue
        if attr == DLQ_TIME_ATTR and not _is_epoch(text):
            continue
        attributes[attr] = text


def _is_epoch(text: str) -> bool:
    try:
        return 0 <= float(text) < 1e11  # finite, and before the year 5138
    except ValueError:
        return False


def _shown(raw: bytes) -> str:
    """A field value for a log or reason: text, at most 40 characters."""
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= 40 else text[:37] + "..."


def _gone_message(stream: str, entry_id: str, received_at: float) -> Message:
    """The report of an entry trimmed (or deleted) while it was pending."""
    return Message(
        topic="",
        body=b"",
        id=entry_id,
        receipt=EntryReceipt(stream, entry_id, gone=True),
        received_at=received_at,
        malformed=(
            f"entry {entry_id} was trimmed from {stream} before it was acked; its content is lost"
        ),
    )


def _locate(stream: str, receipt: Any) -> tuple[str, str, bool]:
    """(stream, entry id, gone) of a receipt; ``stream`` is the shared stream."""
    if receipt.__class__ is str:
        return stream, receipt, False
    return receipt.stream, receipt.entry_id, receipt.gone


def _split_receipts(messages: Iterable[Message]) -> tuple[list[str], list[str]]:
    """The entry ids pending in the shared stream and in the retry stream."""
    shared: list[str] = []
    retry: list[str] = []
    for m in messages:
        receipt = m.receipt
        if receipt.__class__ is str:
            shared.append(receipt)
        elif not receipt.gone:
            retry.append(receipt.entry_id)
    return shared, retry


def _stream_replies(reply: Any) -> Iterable[tuple[Any, Any]]:
    """XREADGROUP's reply as (stream, entries) pairs: RESP2 gives a list of pairs,
    RESP3 a map."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return reply.items()
    return reply  # type: ignore[no-any-return]


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _chunks(items: Sequence[Message], size: int) -> Iterable[Sequence[Message]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


__all__ = [
    "DLQ_GROUP_ATTR",
    "EntryReceipt",
    "RedisStreamsTransport",
    "default_consumer_name",
    "retry_stream_of",
]
