"""How a :class:`~taskorbit.message.Message` looks on SQS, and back.

A message travels as one SQS message: the body is the payload, and everything else
rides in String MessageAttributes, so other tools (the console, SNS filters, another
language's consumer) can read them:

=========================== ==================================================
``taskorbit-topic``         the handler's topic (always, unless empty)
``taskorbit-not-before``    ETA as epoch seconds, when the message is delayed
``taskorbit-attempt``       attempts already used, on a copy re-sent by ``nack``
``taskorbit-body-encoding`` ``base64`` when the payload is not SQS-safe text
``taskorbit-dlq-*``         reason / attempts / time, on dead-letter copies only
(anything else)             the user's own attributes, unchanged
=========================== ==================================================

SQS allows 10 attributes per message and 256 KiB for body plus attributes (names,
type names and values); both are checked here before a call is made.

Reading is forgiving, one message at a time: an entry whose envelope cannot be read
(an attempt of ``"two"``, a not-before of ``inf``, base64 that does not decode, a
packed ``taskorbit-dlq`` attribute that is not JSON) becomes a Message with
``malformed`` naming the field, and its :class:`Receipt` keeps the body and the
attributes exactly as SQS returned them, so that its dead-letter copy shows what
arrived rather than what taskorbit made of it. Its neighbours are not affected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
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


WireAttributes = dict[str, dict[str, Any]]  # MessageAttributes as boto3 sends them


@dataclass(frozen=True, slots=True)
class Receipt:
    """``Message.receipt`` of a message received from SQS.

    ``next_attempt`` is the attempt the next receive of this same SQS message will
    report: its attempt now + 1, because ApproximateReceiveCount grows by one.
    ``nack`` compares it with the attempt the runtime asks for, to choose between a
    visibility change (the broker counts right) and a re-sent copy (it would not).

    ``raw_body`` and ``raw_attributes`` are kept for a malformed message only: the
    body text and MessageAttributes exactly as SQS returned them, for its
    dead-letter copy.
    """

    handle: str  # the ReceiptHandle
    next_attempt: int
    raw_body: str | None = None
    raw_attributes: Mapping[str, Mapping[str, Any]] | None = None


def receipt_of(message: Message) -> Receipt:
    receipt = message.receipt
    if not isinstance(receipt, Receipt):
        raise TypeError(
            f"message {message.id!r} was not received by an SQSTransport "
            f"(its receipt is {receipt!r})"
        )
    return receipt


def dead_letter_copy(message: Message, reason: str, now: float) -> tuple[str, WireAttributes]:
    """Body and MessageAttributes of a dead-letter copy: the original plus the three
    facts (reason, attempts, time).

    A well-formed message is re-encoded by the rules above. A malformed one keeps
    its body and attributes exactly as they arrived (names, types, values): those
    rules may be what it broke, and the copy should show what the producer sent.
    Either way the facts of an earlier dead-lettering are replaced by this one's.
    """
    receipt = message.receipt
    if isinstance(receipt, Receipt) and receipt.raw_attributes is not None:
        body = receipt.raw_body or ""
        wire = {name: _as_sent(value) for name, value in receipt.raw_attributes.items()}
    else:
        body, attributes = outgoing_attributes(message, not_before=None, attempts_used=None)
        wire = wire_attributes(attributes)
    facts = {
        DLQ_REASON_ATTR: reason[:2048] or "unspecified",
        DLQ_ATTEMPTS_ATTR: str(message.attempt),
        DLQ_TIME_ATTR: f"{now:.3f}",
    }
    for name in _DLQ_FACTS:
        wire.pop(name, None)
    if len(wire) + len(facts) <= MAX_ATTRIBUTES:
        wire.update(wire_attributes(facts))
        return body, wire
    # No room for three more: fold the facts into one JSON attribute, and with them
    # as many of the others as it takes to stay within 10 (the reader unfolds them
    # into ordinary attributes again). The user's own go first, ours last.
    packed: dict[str, str] = dict(facts)
    movable = sorted(wire, key=lambda name: (name.startswith("taskorbit-"), name))
    if DLQ_PACKED_ATTR in wire:  # a broken one received; its name is needed
        movable.remove(DLQ_PACKED_ATTR)
        movable.insert(0, DLQ_PACKED_ATTR)
    while len(wire) + 1 > MAX_ATTRIBUTES or DLQ_PACKED_ATTR in wire:
        name = movable.pop(0)
        packed[name] = _attribute_value(wire.pop(name))
    wire[DLQ_PACKED_ATTR] = {
        "DataType": "String",
        "StringValue": json.dumps(packed, separators=(",", ":")),
    }
    return body, wire


def _as_sent(received: Mapping[str, Any]) -> dict[str, Any]:
    """A received MessageAttribute value in the shape SendMessage accepts."""
    value = {"DataType": str(received.get("DataType", "String"))}
    if "BinaryValue" in received:
        value["BinaryValue"] = received["BinaryValue"]
    else:
        value["StringValue"] = str(received.get("StringValue", ""))
    return value


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
    """Build a Message from one ReceiveMessage entry. Never raises because of what
    the entry carries: each field that cannot be read adds a clause naming it to
    ``malformed`` and leaves the field at what could be read."""
    received: Mapping[str, Mapping[str, Any]] = raw.get("MessageAttributes") or {}
    wire = {name: _attribute_value(value) for name, value in received.items()}
    system = raw.get("Attributes") or {}
    problems: list[str] = []
    body_text = str(raw.get("Body", ""))
    body = _read_body(body_text, wire.get(BODY_ENCODING_ATTR), problems)
    attributes = {n: v for n, v in wire.items() if n not in _CARRIED and n != DLQ_PACKED_ATTR}
    if DLQ_PACKED_ATTR in wire:
        # Unfolded beneath the plain attributes: a plain fact is the newer one.
        attributes = {**_read_packed(wire[DLQ_PACKED_ATTR], problems), **attributes}
    # ApproximateReceiveCount restarts at 1 on a re-sent copy; the copy carries
    # the attempts its original had used.
    attempt = _read_attempts_used(wire.get(ATTEMPT_ATTR), problems) + _read_receive_count(
        system.get("ApproximateReceiveCount"), problems
    )
    not_before = _read_not_before(wire.get(NOT_BEFORE_ATTR), problems)
    malformed = "; ".join(problems) or None
    return Message(
        topic=wire.get(TOPIC_ATTR, default_topic),
        body=body,
        attributes=attributes,
        id=str(raw.get("MessageId", "")),
        attempt=attempt,
        receipt=Receipt(
            handle=str(raw.get("ReceiptHandle", "")),
            next_attempt=attempt + 1,
            raw_body=body_text if malformed else None,
            raw_attributes=received if malformed else None,
        ),
        ordering_key=system.get("MessageGroupId"),
        not_before=not_before,
        received_at=received_at,
        malformed=malformed,
    )


def _shown(value: str) -> str:
    """A received value quoted for a malformed reason, cut short."""
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _read_body(text: str, encoding: str | None, problems: list[str]) -> bytes:
    if encoding is None:
        return text.encode("utf-8")
    if encoding != "base64":
        problems.append(f"{BODY_ENCODING_ATTR} {_shown(encoding)} is not 'base64'")
        return text.encode("utf-8")
    try:
        # Strict: without validate=True, b64decode skips any character it does not
        # know, so most garbage "decodes" to other garbage.
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        problems.append(f"{BODY_ENCODING_ATTR} is 'base64' but the body is not valid base64")
        return text.encode("utf-8")


def _count(value: str) -> int | None:
    """A count of 1 or more written in plain digits, or None. Stricter than int(),
    which also takes " 2", "+2", "2_0" and "٢"; at most 9 digits."""
    if value.isascii() and value.isdigit() and len(value) <= 9 and int(value) >= 1:
        return int(value)
    return None


def _read_attempts_used(value: str | None, problems: list[str]) -> int:
    if value is None:
        return 0
    used = _count(value)
    if used is None:
        problems.append(f"{ATTEMPT_ATTR} {_shown(value)} is not a whole number from 1")
    return used or 0


def _read_receive_count(value: str | None, problems: list[str]) -> int:
    if value is None:
        return 1
    count = _count(value)
    if count is None:
        problems.append(f"ApproximateReceiveCount {_shown(value)} is not a whole number from 1")
    return count or 1


def _read_not_before(value: str | None, problems: list[str]) -> float | None:
    if value is None:
        return None
    try:
        when = float(value)
    except ValueError:
        when = math.nan
    if math.isfinite(when):
        return when
    problems.append(f"{NOT_BEFORE_ATTR} {_shown(value)} is not a finite number of epoch seconds")
    return None


def _read_packed(value: str, problems: list[str]) -> dict[str, str]:
    try:
        facts = json.loads(value)
    except (ValueError, RecursionError):
        facts = None
    if isinstance(facts, dict) and all(isinstance(v, str) for v in facts.values()):
        return facts
    problems.append(f"{DLQ_PACKED_ATTR} {_shown(value)} is not a JSON object of strings")
    return {}


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
