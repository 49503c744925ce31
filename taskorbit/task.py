"""A registered handler: its topic, decoder, retry policy and producer side."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, overload

from taskorbit.codec import (
    Codec,
    handler_wants_context,
    make_decoder,
    payload_type,
    strip_annotated,
)
from taskorbit.context import Context
from taskorbit.errors import ConfigurationError, DecodeError, PayloadError
from taskorbit.retry import RetryPolicy

P = TypeVar("P")

# Payload types every body decodes into: checking them at publish time finds nothing.
_UNCHECKED: tuple[Any, ...] = (Any, object, bytes)


class Publisher(Protocol):
    """What a task needs of its app to publish: :meth:`taskorbit.Orbit.publish`.

    A protocol rather than ``Orbit`` itself, so that this module does not import
    the app that imports it (and, through the worker, everything else)."""

    def publish(
        self,
        topic: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
        countdown: float | None = None,
        eta: dt.datetime | float | None = None,
        attributes: Mapping[str, str] | None = None,
        ordering_key: str | None = None,
        codec: Codec | None = None,
    ) -> str: ...


@dataclass(eq=False)
class Task(Generic[P]):
    """A handler bound to a topic. Calling it runs the function directly; ``delay``
    publishes a message that a worker will run.

    ``Task`` is generic in its payload type ``P``: registering
    ``def send(msg: Welcome, ctx: Context) -> None`` gives a ``Task[Welcome]``, so a
    type checker flags ``send.delay(123)``. At run time the payload is checked too,
    before it is sent (:meth:`check`).
    """

    app: Publisher
    topic: str
    fn: Callable[..., Any]
    codec: Codec
    retry_policy: RetryPolicy
    idempotency_key: Callable[[P], str] | None = None
    payload_type: Any = field(init=False)
    decode: Callable[[bytes], Any] = field(init=False, repr=False)
    wants_context: bool = field(init=False)
    #: False for ``bytes`` and ``Any`` handlers, whose decoder refuses nothing it
    #: is given by its own encoder.
    checks_payloads: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.topic or not isinstance(self.topic, str):
            raise ConfigurationError(
                f"a task's topic must be a non-empty string, got {self.topic!r}"
            )
        self.payload_type = payload_type(self.fn)
        self.decode = make_decoder(self.payload_type, self.codec)
        self.wants_context = handler_wants_context(self.fn)
        self.checks_payloads = strip_annotated(self.payload_type) not in _UNCHECKED
        self.__name__ = getattr(self.fn, "__name__", self.topic)
        self.__doc__ = getattr(self.fn, "__doc__", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def check(self, body: bytes) -> None:
        """Raise :class:`PayloadError` when the worker could not decode ``body`` into
        this handler's payload type (it would dead-letter it).

        Publishing calls this for every message of a topic registered in the
        publishing process. It runs the decoder the worker will run, on the body
        just encoded: what passes here decodes there, including msgspec
        constraints and the field types of a Struct built by hand (a Struct's
        constructor does not check them). It costs one decode; see docs/api.md.
        """
        if not self.checks_payloads:
            return
        try:
            self.decode(body)
        except DecodeError as e:
            raise PayloadError(self.topic, str(e)) from e

    def key_for(self, payload: P) -> str | None:
        """The idempotency key the task's ``idempotency_key`` function gives
        ``payload`` (None without one)."""
        if self.idempotency_key is None:
            return None
        try:
            return self.idempotency_key(payload)
        except Exception:
            # A payload of the wrong shape usually breaks the key function first
            # (AttributeError on an int): name the payload's fault when it is one.
            self.check(self.codec.encode(payload))
            raise

    def delay(
        self,
        payload: P,
        *,
        idempotency_key: str | None = None,
        countdown: float | None = None,
        eta: dt.datetime | float | None = None,
        attributes: Mapping[str, str] | None = None,
        ordering_key: str | None = None,
    ) -> str:
        """Publish ``payload`` for a worker to run; return the broker's message id.

        ``countdown`` (seconds from now) or ``eta`` (an aware datetime or an epoch
        timestamp) delay the first run. The idempotency key, when given or computed
        by the task's ``idempotency_key`` function, travels as a message attribute.
        A payload that does not match the handler's type raises
        :class:`PayloadError` and nothing is sent.
        """
        return self.app.publish(
            self.topic,
            payload,
            idempotency_key=idempotency_key,
            countdown=countdown,
            eta=eta,
            attributes=attributes,
            ordering_key=ordering_key,
            codec=self.codec,
        )


class TaskDecorator(Protocol):
    """What ``@app.task("topic", ...)`` returns: it turns a handler taking a ``P``
    (and, optionally, a :class:`Context`) into a ``Task[P]``.

    A protocol with two overloads rather than one ``Callable``, so that handlers
    with and without a context both keep their payload type::

        @app.task("welcome.send")
        def send(msg: Welcome, ctx: Context) -> None: ...    # Task[Welcome]
    """

    @overload
    def __call__(self, fn: Callable[[P, Context], object], /) -> Task[P]: ...
    @overload
    def __call__(self, fn: Callable[[P], object], /) -> Task[P]: ...


def not_before(countdown: float | None, eta: dt.datetime | float | None) -> float | None:
    """Turn ``countdown``/``eta`` into an epoch timestamp, validating both."""
    if countdown is not None and eta is not None:
        raise ConfigurationError("pass either countdown= or eta=, not both")
    if countdown is not None:
        if countdown < 0:
            raise ConfigurationError(f"countdown must be >= 0 seconds, got {countdown!r}")
        return time.time() + float(countdown) if countdown > 0 else None
    if eta is None:
        return None
    if isinstance(eta, dt.datetime):
        if eta.tzinfo is None:
            raise ConfigurationError(
                "eta must be timezone-aware (e.g. datetime.now(timezone.utc) + ...), "
                "or pass countdown= in seconds"
            )
        return eta.timestamp()
    return float(eta)
