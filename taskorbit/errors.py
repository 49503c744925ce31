"""One exception hierarchy for everything taskorbit raises.

Client-library exceptions (redis, botocore, grpc) are translated once, inside the
transport that called the library; nothing above ``transports/`` imports them.
"""

from __future__ import annotations


class TaskorbitError(Exception):
    """Base class of every error taskorbit raises on purpose."""


class ConfigurationError(TaskorbitError, ValueError):
    """A bad argument or setting; the message says what to do instead."""


class RingClosed(TaskorbitError):
    """The ring buffer was closed; nothing more can be put into it."""


class TimerWheelStopped(TaskorbitError):
    """The timer wheel was stopped; it accepts no more timers."""


class DecodeError(TaskorbitError):
    """A payload could not be decoded into the handler's type. Never retried."""


class EncodeError(TaskorbitError, TypeError):
    """An object could not be encoded by the codec (an unsupported type, most often)."""


class PayloadError(ConfigurationError):
    """A payload published for a topic registered in this process does not match its
    handler's declared type, so the worker would dead-letter it: it is refused
    before it is sent. ``topic`` and ``reason`` (the decoder's own words) are kept
    for callers that report it, e.g. as an HTTP 400."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        # The decoder says "payload does not match Welcome: ..."; name the topic in it.
        if reason.startswith("payload "):
            rest = reason[len("payload ") :]
        else:
            rest = f"cannot be decoded: {reason}"
        super().__init__(f"payload for {topic!r} {rest}")

    def __reduce__(self) -> tuple[type[PayloadError], tuple[str, str]]:
        return type(self), (self.topic, self.reason)  # picklable despite two arguments


class TransportError(TaskorbitError):
    """The broker or its client library failed; the call may succeed if repeated."""


class TransportConnectionError(TransportError):
    """The broker could not be reached."""


class PayloadTooLargeError(TransportError, ValueError):
    """A message is larger than the broker accepts."""
