"""How taskorbit messages look on the Pub/Sub wire: resource names, attributes,
attempt counts and size limits. Pure functions; no client calls.

Reading is strict and per message: an attribute taskorbit owns that cannot be read
(a not-before of ``inf``, ``nan`` or ``soon``; an attempt of ``two``, ``0`` or
``-1``) is reported by :func:`read_envelope` as a problem naming the attribute,
never guessed at ("deliver now", "attempt 1") and never raised, so one foreign or
buggy producer cannot take a pull batch down or sneak past ``max_retries``.
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
#: On a retry copy: the full path of the one subscription the copy is for. Every
#: other subscription of the topic acknowledges it on receipt without running it.
FOR_SUBSCRIPTION_ATTR = "taskorbit-for-subscription"
#: Pub/Sub sets this on a message its dead-letter policy forwarded; such a message
#: is read from the dead-letter topic, where a retry copy's target no longer applies.
FORWARDED_FROM_ATTR = "CloudPubSubDeadLetterSourceSubscription"
#: Attributes taskorbit keeps in ``Message`` fields (or routes by) instead of
#: ``Message.attributes``.
RESERVED_FIELDS = (TOPIC_ATTR, NOT_BEFORE_ATTR, ATTEMPT_ATTR, FOR_SUBSCRIPTION_ATTR)
#: A carried attempt: a whole number from 1, at most 18 digits (no sign, no spaces).
_ATTEMPT = re.compile(r"[1-9][0-9]{0,17}")
#: How much of an unreadable value a malformed reason quotes.
_QUOTED_CHARS = 60

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
    ``in_place_attempt`` is the attempt the next delivery of this very message will
    be read as if it is nacked in place (``modify_ack_deadline``): the count at
    receive + 1 where Pub/Sub counts, the carried count where it does not. ``nack``
    compares it with the attempt the runtime wants and re-publishes a copy when
    they differ. ``raw_attributes`` keeps a malformed message's attributes as they
    arrived, for its dead-letter copy; None for readable messages.
    """

    ack_id: str
    broker_counted: bool
    size: int
    in_place_attempt: int = 1
    raw_attributes: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """taskorbit's own attributes of one received message, each read on its own.

    An unreadable attribute reads as absent (``not_before`` None, ``base_attempt``
    1) and is named in ``malformed``; the transport then hands the message over
    for the worker to dead-letter instead of trusting the stand-in value.
    """

    not_before: float | None
    base_attempt: int
    malformed: str | None


def read_envelope(attributes: Mapping[str, str]) -> Envelope:
    """Read the not-before time and the carried attempt of one received message.

    >>> read_envelope({"taskorbit-attempt": "3"})
    Envelope(not_before=None, base_attempt=3, malformed=None)
    >>> read_envelope({"taskorbit-not-before": "inf"}).malformed
    "taskorbit-not-before is 'inf', not epoch seconds as a finite number"
    >>> read_envelope({"taskorbit-attempt": "0"}).malformed
    "taskorbit-attempt is '0', not a whole number from 1"
    """
    problems: list[str] = []
    not_before = None
    raw = attributes.get(NOT_BEFORE_ATTR)
    if raw is not None:
        try:
            not_before = float(raw)
        except ValueError:
            not_before = math.nan
        if not math.isfinite(not_before):
            problems.append(_unreadable(NOT_BEFORE_ATTR, raw, "epoch seconds as a finite number"))
            not_before = None
    base = 1
    raw = attributes.get(ATTEMPT_ATTR)
    if raw is not None:
        if _ATTEMPT.fullmatch(raw):
            base = int(raw)
        else:
            problems.append(_unreadable(ATTEMPT_ATTR, raw, "a whole number from 1"))
    return Envelope(not_before, base, "; ".join(problems) or None)


def _unreadable(name: str, raw: str, expected: str) -> str:
    shown = raw if len(raw) <= _QUOTED_CHARS else raw[:_QUOTED_CHARS] + "..."
    return f"{name} is {shown!r}, not {expected}"


def is_copy_for_another(attributes: Mapping[str, str], subscription: str) -> bool:
    """True for a retry copy meant for another subscription of the same topic.

    A copy that Pub/Sub's dead-letter policy forwarded to a dead-letter topic still
    carries its target; whoever reads that topic must see it, so it is not skipped.
    """
    target = attributes.get(FOR_SUBSCRIPTION_ATTR)
    return target is not None and target != subscription and FORWARDED_FROM_ATTR not in attributes


def wire_attributes(
    message: Message, attempt: int | None = None, *, for_subscription: str | None = None
) -> dict[str, str]:
    """The user's attributes plus taskorbit's own: topic, not-before, attempt, and
    the subscription a retry copy is for."""
    attributes = {k: v for k, v in message.attributes.items() if k not in RESERVED_FIELDS}
    attributes[TOPIC_ATTR] = message.topic
    if message.not_before is not None:
        attributes[NOT_BEFORE_ATTR] = repr(float(message.not_before))
    if attempt is not None and attempt > 1:
        attributes[ATTEMPT_ATTR] = str(attempt)
    if for_subscription is not None:
        attributes[FOR_SUBSCRIPTION_ATTR] = for_subscription
    return attributes


def attempt_of(
    base: int,
    delivery_attempt: int,
    *,
    publish_time: float,
    not_before: float | None,
    hop_s: float,
    redelay_threshold_s: float,
) -> int:
    """The delivery count of a received message.

    ``base`` is the carried ``taskorbit-attempt``: the count this copy started at (a
    re-published retry carries the attempt the runtime set for it). Without a
    dead-letter policy Pub/Sub keeps no count, so that is the answer. With one,
    ``delivery_attempt`` counts the deliveries of this copy, including the hops that
    waited for a not-before time (each hop is one redelivery of at most ``hop_s``);
    those are not attempts and are subtracted as an estimate from the publish time::

        base 3, delivery_attempt 1, no not-before          -> 3
        base 1, delivery_attempt 4, no not-before          -> 4
        base 2, delivery_attempt 4, not-before 1,500 s after publish, hop 600 s
            -> waits = ceil((1500 - 1) / 600) = 3  -> 2 + 4 - 1 - 3 = 2
    """
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
