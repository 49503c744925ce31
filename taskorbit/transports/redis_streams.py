"""Redis Streams: a durable, at-least-once transport on one stream and consumer group.

Keys (``stream="taskorbit"``):

====================  ==============================================================
``taskorbit``         the stream; one entry per message
``taskorbit:delayed`` sorted set of messages waiting for their due time (score)
``taskorbit:dlq``     dead-letter stream: the original fields plus reason, attempts, time
====================  ==============================================================

An entry's fields: ``topic``, ``body``, ``attrs`` (JSON, only when there are
attributes), ``attempt`` (only on re-published entries: the attempt the next delivery
is), ``id`` (the message id, kept across re-publishes), ``okey`` (ordering key).

Attempt numbers: a received message's attempt is the carried ``attempt`` (1 if
absent) plus the entry's delivery count in the pending list minus one. A worker that
dies holding an entry leaves it pending; the next consumer claims it with
XAUTOCLAIM, which raises the delivery count, so a message that crashes the process
every time still reaches the runtime's retry limit and the DLQ.

See docs/transports/redis.md for the full semantics and configuration.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

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
from taskorbit.transports import _redis_scripts as scripts
from taskorbit.transports._redis_connect import (
    Reconnector,
    connect,
    is_busy_group,
    is_missing_group,
    log,
    max_block_s,
    translated,
)
from taskorbit.transports.base import AckFailure, Transport

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder(dict[str, str]).decode

# Dead-letter entries carry these fields beside the original ones.
_DLQ_FIELDS = {
    b"dlq-reason": DLQ_REASON_ATTR,
    b"dlq-attempts": DLQ_ATTEMPTS_ATTR,
    b"dlq-time": DLQ_TIME_ATTR,
}
# Members per delayed-set move and ids per extend script call: bounded so that one
# script never blocks the server for long.
_SCRIPT_CHUNK = 500


def default_consumer_name() -> str:
    """hostname-pid-random: unique per transport, readable in XINFO CONSUMERS."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


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
            )
        }
        self._group_ready = False
        # Monotonic times of the next delayed-set move and the next idle claim; the
        # first receive does both at once, so a restarted worker recovers at start.
        self._next_move_at = 0.0
        self._next_claim_at = 0.0
        self._claim_cursor = "0-0"
        self._reconnector = Reconnector(f"redis-streams consumer {self.consumer}")

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
        messages: list[Message] = []
        if now >= self._next_claim_at:
            messages = self._claim_idle(max_messages)
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
        block_ms = int(block_s * 1000)
        with translated():
            reply = self.client.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: ">"},
                count=count,
                block=block_ms if block_ms > 0 else None,
            )
        received_at = time.monotonic()
        messages = []
        for _stream, entries in _stream_replies(reply):
            for entry_id, fields in entries:
                messages.append(_to_message(entry_id, fields, 1, received_at))
        return messages

    def _claim_idle(self, count: int) -> list[Message]:
        """Claim entries idle for claim_idle_s: left by dead consumers, or by this
        consumer's earlier life. They are handed to the runtime to be processed."""
        with translated():
            cursor, entries, counts = self._scripts["CLAIM_IDLE"](
                keys=[self.stream],
                args=[
                    self.group,
                    self.consumer,
                    int(self.claim_idle_s * 1000),
                    self._claim_cursor,
                    count,
                ],
            )
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        # A full batch means more may be waiting: look again on the next receive.
        more = len(entries) >= count and self._claim_cursor != "0-0"
        self._next_claim_at = time.monotonic() + (0.0 if more else self.claim_interval_s)
        if entries:
            log.info(
                "claimed %d idle entries from %s for consumer %s",
                len(entries),
                self.stream,
                self.consumer,
            )
        received_at = time.monotonic()
        return [
            _to_message(entry_id, fields, int(deliveries), received_at)
            for (entry_id, fields), deliveries in zip(entries, counts, strict=True)
        ]

    def _move_due(self) -> None:
        """Move due delayed messages into the stream (atomically, in Lua)."""
        while True:
            with translated():
                moved, next_due = self._scripts["MOVE_DUE"](
                    keys=[self.delayed_key, self.stream],
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
        try:
            with translated():
                # Id 0, not $: messages published before the first worker started count.
                self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except TransportError as exc:
            if not is_busy_group(exc):
                raise
        self._group_ready = True

    # -- settling --------------------------------------------------------------

    def ack(self, messages: Sequence[Message]) -> list[AckFailure]:
        """One XACK (and XDEL when ``delete_acked``) per 500 messages, in one script."""
        if not messages:
            return []
        acked = 0
        delete = "1" if self.delete_acked else "0"
        for chunk in _chunks(messages, _SCRIPT_CHUNK):
            with translated():
                acked += self._scripts["ACK"](
                    keys=[self.stream], args=[self.group, delete, *(m.receipt for m in chunk)]
                )
        if acked < len(messages):
            # Not pending any more: another consumer claimed and acked it after our
            # lease ran out. Nothing to retry, the message was handled.
            log.debug(
                "%d of %d acked entries were no longer pending",
                len(messages) - acked,
                len(messages),
            )
        return []

    def nack(self, messages: Sequence[Message], delay: float = 0.0) -> None:
        """Re-publish with attempt + 1 and ack the original, atomically: at once, or
        through the delayed set when ``delay`` > 0."""
        if not messages:
            return
        due = "" if delay <= 0 else repr(time.time() + delay)
        for chunk in _chunks(messages, _SCRIPT_CHUNK):
            args: list[Any] = [self.group, "1" if self.delete_acked else "0", self._trim()]
            for m in chunk:
                member = scripts.encode_member(_fields_of(m, attempt=m.attempt + 1))
                args += [m.receipt, due, member]
            with translated():
                self._scripts["REQUEUE"](keys=[self.stream, self.delayed_key], args=args)
        if delay > 0:
            # Wake our own mover in time; others find it within move_interval_s.
            self._next_move_at = min(self._next_move_at, time.monotonic() + delay)

    def extend(self, messages: Sequence[Message], seconds: float) -> None:
        """Reset the idle time of held entries (XCLAIM JUSTID to ourselves), which
        keeps them from being claimed for another ``claim_idle_s``. Redis cannot push
        an entry's idle time into the future, so ``seconds`` beyond that is reached
        by the runtime calling again, as it does every third of ``lease_s``."""
        for chunk in _chunks(messages, _SCRIPT_CHUNK):
            with translated():
                self._scripts["EXTEND"](
                    keys=[self.stream],
                    args=[self.group, self.consumer, *(m.receipt for m in chunk)],
                )

    def dead_letter(self, message: Message, reason: str) -> None:
        """XADD to the dead-letter stream, then XACK the original, in one script."""
        fields = _fields_of(message, attempt=message.attempt)
        fields += [
            "dlq-reason",
            reason,
            "dlq-attempts",
            str(message.attempt),
            "dlq-time",
            repr(time.time()),
        ]
        with translated():
            copied = self._scripts["DEAD_LETTER"](
                keys=[self.stream, self.dlq_stream],
                args=[self.group, "1" if self.delete_acked else "0", message.receipt, *fields],
            )
        if not copied:
            log.debug("dead-letter of %s skipped: no longer pending", message.receipt)

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
        """The trim argument of the scripts' XADDs (off by default: trimming can drop
        entries that were never delivered)."""
        if self.maxlen is not None:
            return f"MAXLEN {self.maxlen}"
        if self.max_age_s is not None:
            return f"MINID {int((time.time() - self.max_age_s) * 1000)}-0"
        return ""

    # -- inspection ------------------------------------------------------------

    def dead_letters(self, count: int = 100, start: str = "-") -> list[Message]:
        """The oldest ``count`` dead letters from ``start``; reason, attempts and time
        are in the attributes under the reserved ``taskorbit-dlq-*`` names."""
        with translated():
            entries = self.client.xrange(self.dlq_stream, min=start, count=count)
        return [_to_message(entry_id, fields, 1, 0.0) for entry_id, fields in entries or []]

    def close(self) -> None:
        """Remove this consumer from the group when it holds nothing, then disconnect."""
        try:
            pending = self.client.xpending_range(
                self.stream, self.group, min="-", max="+", count=1, consumername=self.consumer
            )
            if not pending:
                self.client.xgroup_delconsumer(self.stream, self.group, self.consumer)
        except redis.RedisError as exc:
            log.debug("could not remove consumer %s: %s", self.consumer, exc)
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


def _to_message(entry_id: Any, fields: Any, deliveries: int, received_at: float) -> Message:
    """A stream entry as a Message. ``fields`` is a dict (redis-py) or a flat list
    (a Lua reply)."""
    if not isinstance(fields, dict):
        fields = _pairs(fields)
    receipt = _text(entry_id)
    if len(fields) == 2:
        # Just topic and body, as publish_many writes them. The poller converts whole
        # batches at once while the handler threads wait for the GIL: keep it short.
        return Message(
            fields[b"topic"].decode(),
            fields[b"body"],
            {},
            receipt,
            max(1, deliveries),
            receipt,
            None,
            None,
            received_at,
        )
    raw_attrs = fields.get(b"attrs")
    attributes = _json_decode(raw_attrs) if raw_attrs else {}
    for field, attr in _DLQ_FIELDS.items():
        if field in fields:
            attributes[attr] = fields[field].decode()
    carried = fields.get(b"attempt")
    not_before = attributes.get(NOT_BEFORE_ATTR)
    okey = fields.get(b"okey")
    message_id = fields.get(b"id")
    return Message(
        topic=fields[b"topic"].decode(),
        body=fields[b"body"],
        attributes=attributes,
        id=message_id.decode() if message_id else receipt,
        attempt=(int(carried) if carried else 1) + max(0, deliveries - 1),
        receipt=receipt,
        ordering_key=okey.decode() if okey else None,
        not_before=float(not_before) if not_before else None,
        received_at=received_at,
    )


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


__all__ = ["RedisStreamsTransport", "default_consumer_name"]
