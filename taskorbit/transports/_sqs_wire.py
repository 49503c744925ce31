"""How a :class:`~taskorbit.message.Message` looks on SQS, and back.

A message travels as one SQS message: the body is the payload, and everything else
rides in String MessageAttributes, so other tools (the console, SNS filters, another
language's consumer) can read them:

=========================== ==================================================
``taskorbit-topic``         the handler's topic (always, unless empty)
``taskorbit-not-before``    ETA as epoch seconds, when the message is delayed
``taskorbit-attempt``       attempts already used, when a long delay re-sent it
``taskorbit-body-encoding`` ``base64`` when the payload is not SQS-safe text
``taskorbit-dlq-*``         reason / attempts / time, on dead-letter copies only
(anything else)             the user's own attributes, unchanged
=========================== ==================================================

SQS allows 10 attributes per message and 256 KiB for body plus attributes (names,
type names and values); both are checked here before a call is made.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from taskorbit.errors import ConfigurationError, PayloadTooLargeError
from taskorbit.message import (
    ATTEMPT_ATTR,
    DLQ_ATTEMPTS_ATTR,
    DLQ_REASON_ATTR,
    DLQ_TIME_ATTR,
    NOT_BEFORE_ATTR,
    TOPIC_ATTR,
    Message,
)

BODY_ENCODING_ATTR = "taskorbit-body-encoding"
# The three dead-letter facts folded into one JSON attribute, used only when a
# dead-letter copy would otherwise exceed SQS's 10 attributes.
DLQ_PACKED_ATTR = "taskorbit-dlq"
MAX_ATTRIBUTES = 10
MAX_BATCH = 10
DEFAULT_MAX_MESSAGE_BYTES = 262_144  # 256 KiB, body + attributes
MAX_DELAY_SECONDS = 900  # SendMessage DelaySeconds: 15 minutes
MAX_VISIBILITY_S = 43_200  # ChangeMessageVisibility: 12 hours from the first receive

# Attributes the transport reads into Message fields instead of showing to handlers.
_CARRIED = frozenset({TOPIC_ATTR, NOT_BEFORE_ATTR, ATTEMPT_ATTR, BODY_ENCODING_ATTR})
_DLQ_FACTS = (DLQ_REASON_ATTR, DLQ_ATTEMPTS_ATTR, DLQ_TIME_ATTR)
# The characters SQS accepts in a body; anything else (NUL, lone surrogates, most
# control characters) makes SendMessage fail, so such payloads go as base64.
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DEDUP_ID = re.compile(r"^[!-~]{1,128}$")  # alphanumerics and punctuation, <= 128


def encode_body(body: bytes) -> tuple[str, bool]:
    """Return the SQS body text and whether it had to be base64-encoded."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), True
    if _NOT_SQS_TEXT.search(text):
        return base64.b64encode(body).decode("ascii"), True
    return text, False


def wire_attributes(attributes: Mapping[str, str]) -> dict[str, dict[str, str]]:
    for name, value in attributes.items():
        if value == "":
            raise ConfigurationError(f"SQS rejects empty attribute values; attribute {name!r}")
    return {n: {"DataType": "String", "StringValue": v} for n, v in attributes.items()}


def wire_size(body: str, attributes: Mapping[str, str]) -> int:
    """Bytes SQS counts against its size limit: body, attribute names, types, values."""
    size = len(body.encode("utf-8"))
    for name, value in attributes.items():
        size += len(name.encode("utf-8")) + len("String") + len(value.encode("utf-8"))
    return size


def check_size(size: int, limit: int, what: str) -> None:
    if size > limit:
        raise PayloadTooLargeError(
            f"{what} is {size:,} bytes (body + attributes); SQS accepts at most "
            f"{limit:,} bytes ({limit // 1024} KiB). Store large payloads elsewhere "
            "(for example S3) and send a reference."
        )


def check_count(attributes: Mapping[str, str], what: str) -> None:
    if len(attributes) > MAX_ATTRIBUTES:
        ours = sorted(n for n in attributes if n.startswith("taskorbit-"))
        raise ConfigurationError(
            f"{what} has {len(attributes)} attributes; SQS carries at most {MAX_ATTRIBUTES} "
            f"and taskorbit uses {len(ours)} of them here ({', '.join(ours)}); "
            "send fewer attributes of your own"
        )


def outgoing_attributes(
    message: Message, *, not_before: float | None, attempts_used: int | None
) -> tuple[str, dict[str, str]]:
    """The body text and attributes for sending ``message`` (user's + carried ones)."""
    body, is_base64 = encode_body(message.body)
    attributes = {n: v for n, v in message.attributes.items() if n not in _CARRIED}
    if message.topic:
        attributes[TOPIC_ATTR] = message.topic
    if not_before is not None:
        attributes[NOT_BEFORE_ATTR] = f"{not_before:.6f}"
    if attempts_used:
        attributes[ATTEMPT_ATTR] = str(attempts_used)
    if is_base64:
        attributes[BODY_ENCODING_ATTR] = "base64"
    return body, attributes


def dead_letter_attributes(message: Message, reason: str, now: float) -> tuple[str, dict[str, str]]:
    """Body and attributes of a dead-letter copy: the original's plus the three facts."""
    body, attributes = outgoing_attributes(message, not_before=None, attempts_used=None)
    for name in (*_DLQ_FACTS, DLQ_PACKED_ATTR):
        attributes.pop(name, None)
    facts = {
        DLQ_REASON_ATTR: reason[:2048] or "unspecified",
        DLQ_ATTEMPTS_ATTR: str(message.attempt),
        DLQ_TIME_ATTR: f"{now:.3f}",
    }
    if len(attributes) + len(facts) <= MAX_ATTRIBUTES:
        attributes.update(facts)
    else:
        attributes[DLQ_PACKED_ATTR] = json.dumps(facts, separators=(",", ":"))
    return body, attributes


def deduplication_id(key: str) -> str:
    """An SQS MessageDeduplicationId for an idempotency key (hashed if not valid as is)."""
    if _DEDUP_ID.match(key):
        return key
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _attribute_value(raw: Mapping[str, Any]) -> str:
    if "StringValue" in raw:
        return str(raw["StringValue"])
    binary = raw.get("BinaryValue", b"")
    return base64.b64encode(binary).decode("ascii") if isinstance(binary, bytes) else ""


def message_from_sqs(raw: Mapping[str, Any], *, received_at: float, default_topic: str) -> Message:
    """Build a Message from one ReceiveMessage entry."""
    wire = {n: _attribute_value(v) for n, v in raw.get("MessageAttributes", {}).items()}
    system = raw.get("Attributes", {})
    body_text = str(raw.get("Body", ""))
    if wire.get(BODY_ENCODING_ATTR) == "base64":
        body = base64.b64decode(body_text)
    else:
        body = body_text.encode("utf-8")
    attributes = {n: v for n, v in wire.items() if n not in _CARRIED and n != DLQ_PACKED_ATTR}
    if DLQ_PACKED_ATTR in wire:
        attributes.update(json.loads(wire[DLQ_PACKED_ATTR]))
    not_before = wire.get(NOT_BEFORE_ATTR)
    return Message(
        topic=wire.get(TOPIC_ATTR, default_topic),
        body=body,
        attributes=attributes,
        id=str(raw.get("MessageId", "")),
        # ApproximateReceiveCount restarts at 1 on a re-sent copy; the copy carries
        # the attempts its original had used.
        attempt=int(wire.get(ATTEMPT_ATTR, "0")) + int(system.get("ApproximateReceiveCount", "1")),
        receipt=raw["ReceiptHandle"],
        ordering_key=system.get("MessageGroupId"),
        not_before=float(not_before) if not_before else None,
        received_at=received_at,
    )


def batches(
    entries: Sequence[dict[str, Any]], sizes: Sequence[int], limit: int
) -> Iterator[list[dict[str, Any]]]:
    """Group send entries into SendMessageBatch calls: at most 10 entries and at most
    ``limit`` bytes per call (SQS applies the message size limit to the whole batch)."""
    batch: list[dict[str, Any]] = []
    total = 0
    for entry, size in zip(entries, sizes, strict=True):
        if batch and (len(batch) == MAX_BATCH or total + size > limit):
            yield batch
            batch, total = [], 0
        batch.append(entry)
        total += size
    if batch:
        yield batch
