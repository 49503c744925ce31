"""How a taskorbit Message looks as a Kafka record, and back. Pure functions.

A record's value is the body as given; its key is the ordering key (UTF-8); its
headers carry the taskorbit topic, the user's attributes and, where set, the
not-before time and the attempt. Retry and dead-letter copies add their own
headers (below). Header values are UTF-8 text; a Kafka header may repeat a key,
and the last one wins, as in most clients' dict views.

Reading is strict and per record: a header taskorbit owns that cannot be read (a
not-before of ``inf``, an attempt of ``abc``, a value that is not UTF-8) or a null
value (a tombstone) is reported in ``malformed`` naming the field, never guessed at
and never raised, so one foreign or buggy producer cannot stop a partition.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from taskorbit.errors import PayloadTooLargeError
from taskorbit.message import ATTEMPT_ATTR, NOT_BEFORE_ATTR, TOPIC_ATTR, Message

#: On a retry copy: when (epoch seconds) its retry partition may hand it out. The
#: consumer pauses that partition until then.
RETRY_DUE_ATTR = "taskorbit-retry-due"
#: On a retry copy: why it was handed back ("retry" or "hand-back"), for operators.
RETRY_REASON_ATTR = "taskorbit-retry-reason"
#: On retry and dead-letter copies: where the original record was. Set once, on the
#: first copy of a record, and kept by later copies; the message id is made of them.
SOURCE_TOPIC_ATTR = "taskorbit-source-topic"
SOURCE_PARTITION_ATTR = "taskorbit-source-partition"
SOURCE_OFFSET_ATTR = "taskorbit-source-offset"
#: On a dead-letter copy: the consumer group that gave up on it.
DLQ_GROUP_ATTR = "taskorbit-dlq-group"
#: Headers kept in Message fields (or used for routing) rather than attributes.
RESERVED = (TOPIC_ATTR, NOT_BEFORE_ATTR, ATTEMPT_ATTR, RETRY_DUE_ATTR, RETRY_REASON_ATTR)
_ATTEMPT = re.compile(r"[1-9][0-9]{0,17}")
_QUOTED_CHARS = 60
#: Bytes a record costs beyond its key, value and headers (Kafka's record framing),
#: counted so that the size check errs on the safe side.
_RECORD_OVERHEAD = 64
_HEADER_OVERHEAD = 8

Headers = list[tuple[str, bytes]]


class Receipt(NamedTuple):
    """What the transport needs to settle a received record.

    ``generation`` is the transport's count of assignments of this partition at the
    time it was received: a message whose partition was revoked (and perhaps
    assigned again) since then is no longer this worker's to settle.
    ``delivered_attempt`` is the attempt it was handed out with, so that a
    hand-back that did not run it is told from a retry. ``raw_headers`` keeps a
    malformed record's headers as they arrived, for its dead-letter copy, and
    ``null_value`` says its value was null (a tombstone). ``due`` is a retry copy's
    ``taskorbit-retry-due`` (epoch seconds).
    """

    topic: str
    partition: int
    offset: int
    generation: int
    delivered_attempt: int
    raw_headers: Sequence[tuple[str, bytes | None]] | None = None
    null_value: bool = False
    due: float | None = None


class Envelope(NamedTuple):
    """taskorbit's own headers of one record, each read on its own."""

    topic: str | None
    attributes: dict[str, str]
    not_before: float | None
    attempt: int
    due: float | None
    malformed: str | None


def read_headers(headers: Sequence[tuple[str, bytes | None]] | None, has_value: bool) -> Envelope:
    """Read one record's headers.

    >>> read_headers([("taskorbit-topic", b"t"), ("color", b"red")], True).attributes
    {'color': 'red'}
    >>> read_headers([("taskorbit-attempt", b"abc")], True).malformed
    "header taskorbit-attempt is 'abc', not a whole number from 1"
    """
    attributes: dict[str, str] = {}
    problems: list[str] = []
    if headers:
        for key, raw in headers:
            if raw is None:
                attributes[key] = ""
                continue
            try:
                attributes[key] = raw.decode()
            except UnicodeDecodeError:
                problems.append(f"header {key} is not UTF-8 text ({_quote(repr(raw))})")
    if not has_value:
        problems.append("the record's value is null (a tombstone), not a message body")
    topic = attributes.pop(TOPIC_ATTR, None)
    not_before = _when(attributes.pop(NOT_BEFORE_ATTR, None), NOT_BEFORE_ATTR, problems)
    due = _when(attributes.pop(RETRY_DUE_ATTR, None), RETRY_DUE_ATTR, problems)
    attributes.pop(RETRY_REASON_ATTR, None)
    attempt = 1
    raw_attempt = attributes.pop(ATTEMPT_ATTR, None)
    if raw_attempt is not None:
        if _ATTEMPT.fullmatch(raw_attempt):
            attempt = int(raw_attempt)
        else:
            problems.append(
                f"header {ATTEMPT_ATTR} is {_quote(raw_attempt)}, not a whole number from 1"
            )
    return Envelope(topic, attributes, not_before, attempt, due, "; ".join(problems) or None)


def _when(raw: str | None, name: str, problems: list[str]) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        return value
    problems.append(f"header {name} is {_quote(raw)}, not epoch seconds as a finite number")
    return None


def _quote(text: str) -> str:
    return repr(text if len(text) <= _QUOTED_CHARS else text[:_QUOTED_CHARS] + "...")


def message_id(topic: str, partition: int, offset: int, attributes: Mapping[str, str]) -> str:
    """``topic:partition:offset`` of the original record: a copy keeps its source's id."""
    source = attributes.get(SOURCE_OFFSET_ATTR)
    if source is not None:
        return (
            f"{attributes.get(SOURCE_TOPIC_ATTR, '')}:"
            f"{attributes.get(SOURCE_PARTITION_ATTR, '')}:{source}"
        )
    return f"{topic}:{partition}:{offset}"


def source_attributes(message: Message) -> dict[str, str]:
    """The source headers a copy of ``message`` carries: its own, or its record's."""
    if SOURCE_OFFSET_ATTR in message.attributes:
        return {}
    receipt = message.receipt
    if not isinstance(receipt, Receipt):
        return {}
    return {
        SOURCE_TOPIC_ATTR: receipt.topic,
        SOURCE_PARTITION_ATTR: str(receipt.partition),
        SOURCE_OFFSET_ATTR: str(receipt.offset),
    }


def encode_headers(
    message: Message, *, attempt: int | None = None, extra: Mapping[str, str] | None = None
) -> Headers:
    """The headers of ``message`` as taskorbit publishes it."""
    headers = [(TOPIC_ATTR, message.topic.encode())]
    for key, value in message.attributes.items():
        if key not in RESERVED:
            headers.append((key, value.encode()))
    if message.not_before is not None:
        headers.append((NOT_BEFORE_ATTR, repr(float(message.not_before)).encode()))
    if attempt is not None and attempt > 1:
        headers.append((ATTEMPT_ATTR, str(attempt).encode()))
    if extra:
        headers.extend((key, value.encode()) for key, value in extra.items())
    return headers


def raw_headers_with(
    raw: Sequence[tuple[str, bytes | None]], extra: Mapping[str, str]
) -> list[tuple[str, Any]]:
    """A malformed record's headers as received, plus ``extra`` (replacing those keys)."""
    kept: list[tuple[str, Any]] = [(k, v) for k, v in raw if k not in extra]
    kept.extend((key, value.encode()) for key, value in extra.items())
    return kept


def key_of(ordering_key: str | None) -> bytes | None:
    return None if ordering_key is None else ordering_key.encode()


def ordering_key_of(key: bytes | None) -> str | None:
    """The record key as an ordering key: its text, or ``0x<hex>`` when not UTF-8."""
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return "0x" + key.hex()


def check_size(
    topic: str,
    value: bytes,
    key: bytes | None,
    headers: Sequence[tuple[str, Any]],
    limit: int,
) -> None:
    """Refuse a record the producer or broker would reject, before anything is sent."""
    header_bytes = sum(len(k.encode()) + len(v or b"") + _HEADER_OVERHEAD for k, v in headers)
    size = len(value) + len(key or b"") + header_bytes + _RECORD_OVERHEAD
    if size <= limit:
        return
    if header_bytes + _RECORD_OVERHEAD > limit // 2:
        raise PayloadTooLargeError(
            f"message for Kafka topic {topic} has {header_bytes:,} bytes of headers "
            f"({len(headers)} headers); with its value that is {size:,} bytes, over the "
            f"limit of {limit:,} (max_message_bytes): carry large metadata in the value"
        )
    raise PayloadTooLargeError(
        f"message for Kafka topic {topic} is {size:,} bytes (value {len(value):,}, key "
        f"{len(key or b''):,}, headers {header_bytes:,}); the limit is {limit:,} bytes "
        "(max_message_bytes, which must not exceed the producer's message.max.bytes and the "
        "topic's max.message.bytes): store the payload elsewhere and send a reference"
    )
