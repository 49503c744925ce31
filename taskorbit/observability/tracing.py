"""W3C trace context (``traceparent``/``tracestate``) carried in message attributes.

No OpenTelemetry needed: the producer's current trace context (a contextvar set by
:func:`use`, or by the worker while it runs a handler) is written into each
outgoing message, and the worker makes the message's context current while its
handler runs. So a handler that publishes continues the trace, on every
transport, since attributes travel everywhere.

::

    app = Orbit(hooks=[TracingHooks()])
    with tracing.use(tracing.TraceContext.parse(request.headers["traceparent"])):
        send_email.delay(payload)          # carries traceparent 00-<same trace>-<new span>-01

    @app.task("email.send")
    def send_email(msg, ctx):
        tracing.current()                  # the producer's trace, a child span id

With OpenTelemetry installed, use :class:`taskorbit.observability.otel.OpenTelemetryHooks`
instead: it propagates through OpenTelemetry's own context and makes real spans.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import secrets
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass

from taskorbit.hooks import Hooks
from taskorbit.message import Message, Result

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$")


@dataclass(frozen=True)
class TraceContext:
    """One span's identity: ``trace_id`` (32 hex), ``span_id`` (16 hex), sampled flag."""

    trace_id: str
    span_id: str
    sampled: bool = True
    tracestate: str = ""

    @classmethod
    def parse(cls, traceparent: str | None, tracestate: str = "") -> TraceContext | None:
        """The context in a ``traceparent`` header, or None when it is not valid.

        >>> TraceContext.parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").span_id
        '00f067aa0ba902b7'
        """
        match = _TRACEPARENT.match((traceparent or "").strip().lower())
        if match is None:
            return None
        version, trace_id, span_id, flags = match.groups()
        if version == "ff" or set(trace_id) == {"0"} or set(span_id) == {"0"}:
            return None  # forbidden by the spec
        return cls(trace_id, span_id, bool(int(flags, 16) & 1), tracestate)

    @classmethod
    def new_root(cls) -> TraceContext:
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    def child(self) -> TraceContext:
        """A new span in the same trace."""
        return TraceContext(self.trace_id, secrets.token_hex(8), self.sampled, self.tracestate)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


_current: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar(
    "taskorbit_trace", default=None
)


def current() -> TraceContext | None:
    """The trace context of the running code (a handler, or inside :func:`use`)."""
    return _current.get()


@contextlib.contextmanager
def use(context: TraceContext | None) -> Iterator[TraceContext | None]:
    """Make ``context`` current for the block (e.g. the one from a request header)."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def inject(attributes: MutableMapping[str, str], context: TraceContext) -> None:
    """Write ``context`` as a child span into ``attributes`` (the message's send span)."""
    outgoing = context.child()
    attributes[TRACEPARENT] = outgoing.traceparent
    if outgoing.tracestate:
        attributes[TRACESTATE] = outgoing.tracestate


def extract(attributes: Mapping[str, str]) -> TraceContext | None:
    return TraceContext.parse(attributes.get(TRACEPARENT), attributes.get(TRACESTATE, ""))


class TracingHooks(Hooks):
    """Propagates W3C trace context from producers through messages to handlers.

    ``start_traces=True`` gives a message published outside any trace a new root
    trace, so that everything it causes can still be followed.
    """

    def __init__(self, *, start_traces: bool = False) -> None:
        self.start_traces = start_traces
        # id(message) -> the contextvar token to reset once the message is settled.
        # Dispatch and settling run on the same worker thread, one message at a time.
        self._tokens: dict[int, contextvars.Token[TraceContext | None]] = {}

    def on_publish(self, message: Message) -> None:
        if TRACEPARENT in message.attributes:
            return  # the caller set one explicitly
        context = _current.get()
        if context is None and self.start_traces:
            context = TraceContext.new_root()
        if context is not None:
            inject(message.attributes, context)

    def on_dispatch(self, message: Message) -> None:
        parent = extract(message.attributes)
        # The handler runs as a child span of the message's send span.
        self._tokens[id(message)] = _current.set(parent.child() if parent else None)

    def _end(self, message: Message) -> None:
        token = self._tokens.pop(id(message), None)
        if token is not None:
            with contextlib.suppress(ValueError):  # set in another thread's context
                _current.reset(token)

    def on_complete(self, message: Message, result: Result, duration_s: float) -> None:
        self._end(message)

    def on_retry(self, message: Message, delay_s: float, reason: str) -> None:
        self._end(message)

    def on_dead_letter(self, message: Message, reason: str) -> None:
        self._end(message)
