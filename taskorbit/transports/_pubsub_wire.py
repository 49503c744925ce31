"""How taskorbit messages look on the Pub/Sub wire: resource names, attributes,
attempt counts and size limits. Pure functions; no client calls.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from taskorbit.errors import ConfigurationError, PayloadTooLargeError
from taskorbit.message import ATTEMPT_ATTR, NOT_BEFORE_ATTR, TOPIC_ATTR, Message

#: Pub/Sub refuses a PublishRequest larger than this (the client library's own
#: ``_SERVER_PUBLISH_MAX_BYTES``); one message must fit in one request.
MAX_MESSAGE_BYTES = 10 * 1000 * 1000
#: Attributes taskorbit keeps in ``Message`` fields instead of ``Message.attributes``.
RESERVED_FIELDS = (TOPIC_ATTR, NOT_BEFORE_ATTR, ATTEMPT_ATTR)

_FULL_NAME = re.compile(
    r"^projects/(?P<project>[^/]+)/(?P<kind>topics|subscriptions)/(?P<id>[^/]+)$"
)


def resource_path(name: str, kind: str, project: str | None) -> str:
    """``projects/p/{kind}/id`` from a full path, or from a short id and a project.

    >>> resource_path("jobs", "topics", "acme")
    'projects/acme/topics/jobs'
    """
    match = _FULL_NAME.match(name)
    if match:
        if match["kind"] != kind:
            raise ConfigurationError(f"{name!r} is not a {kind[:-1]} path (projects/P/{kind}/ID)")
        return name
    if "/" in name:
        raise ConfigurationError(f"{name!r} must be an id or a full path projects/P/{kind}/ID")
    project = project or os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not project:
        raise ConfigurationError(
            f"{kind[:-1]} {name!r} has no project: pass project=... or a full path "
            f"projects/P/{kind}/{name}, or set GOOGLE_CLOUD_PROJECT"
        )
    return f"projects/{project}/{kind}/{name}"


def project_of(path: str) -> str:
    return path.split("/")[1]


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the transport needs to settle a received message.

    ``broker_counted`` is True when Pub/Sub reported a ``delivery_attempt`` (the
    subscription has a dead-letter policy), so that a plain nack raises the count.
    """

    ack_id: str
    broker_counted: bool
    size: int


def wire_attributes(message: Message, attempt: int | None = None) -> dict[str, str]:
    """The user's attributes plus taskorbit's own: topic, not-before, attempt."""
    attributes = {k: v for k, v in message.attributes.items() if k not in RESERVED_FIELDS}
    attributes[TOPIC_ATTR] = message.topic
    if message.not_before is not None:
        attributes[NOT_BEFORE_ATTR] = repr(float(message.not_before))
    if attempt is not None and attempt > 1:
        attributes[ATTEMPT_ATTR] = str(attempt)
    return attributes


def parse_not_before(attributes: Mapping[str, str]) -> float | None:
    raw = attributes.get(NOT_BEFORE_ATTR)
    try:
        return float(raw) if raw else None
    except ValueError:
        return None  # a foreign producer wrote garbage: deliver now rather than never


def attempt_of(
    attributes: Mapping[str, str],
    delivery_attempt: int,
    *,
    publish_time: float,
    not_before: float | None,
    hop_s: float,
    redelay_threshold_s: float,
) -> int:
    """The delivery count of a received message.

    ``taskorbit-attempt`` is the count this copy started at (a re-published retry
    carries its predecessor's attempt + 1). Without a dead-letter policy Pub/Sub
    keeps no count, so that is the answer. With one, ``delivery_attempt`` counts the
    deliveries of this copy, including the hops that waited for a not-before time
    (each hop is one redelivery of at most ``hop_s``); those are not attempts and
    are subtracted as an estimate from the publish time::

        base 3, delivery_attempt 1, no not-before          -> 3
        base 1, delivery_attempt 4, no not-before          -> 4
        base 2, delivery_attempt 4, not-before 1,500 s after publish, hop 600 s
            -> waits = ceil((1500 - 1) / 600) = 3  -> 2 + 4 - 1 - 3 = 2
    """
    try:
        base = max(1, int(attributes.get(ATTEMPT_ATTR, "1")))
    except ValueError:
        base = 1
    if delivery_attempt <= 0:
        return base
    waits = 0
    if not_before is not None and not_before - publish_time > redelay_threshold_s:
        waits = math.ceil((not_before - publish_time - redelay_threshold_s) / hop_s)
    return max(base, base + delivery_attempt - 1 - waits)


def user_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in attributes.items() if k not in RESERVED_FIELDS}


def check_size(
    topic_path: str, data: bytes, attributes: Mapping[str, str], ordering_key: str
) -> None:
    """Refuse a message Pub/Sub would reject, before anything is sent.

    The estimate is the protobuf size of a PublishRequest holding only this message:
    each field costs its bytes plus a tag and a length (at most 6 bytes of framing).
    """
    size = len(topic_path) + len(data) + len(ordering_key.encode()) + 32
    size += sum(len(k.encode()) + len(v.encode()) + 12 for k, v in attributes.items())
    if size > MAX_MESSAGE_BYTES:
        raise PayloadTooLargeError(
            f"message for {topic_path} is {size:,} bytes with its attributes; Pub/Sub "
            f"accepts at most {MAX_MESSAGE_BYTES:,} bytes (10 MB) per message: store the "
            "payload elsewhere (e.g. Cloud Storage) and send a reference"
        )
