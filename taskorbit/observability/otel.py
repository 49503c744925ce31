"""OpenTelemetry: one CONSUMER span per handler run, and trace context in messages.

Only ``opentelemetry-api`` is imported (``pip install 'taskorbit[otel]'``); spans
are recorded when the application configures an SDK, and cost next to nothing
when it does not. Attributes follow the messaging semantic conventions:

=================================== ===========================================
``messaging.system``                the transport's name (``aws_sqs``, ``gcp_pubsub``, ``redis``...)
``messaging.operation.type``        ``process``
``messaging.destination.name``      the topic
``messaging.message.id``            the broker's message id
``messaging.message.body.size``     payload bytes
``messaging.consumer.group.name``   not set (transport specific)
``taskorbit.attempt``               1 on the first delivery
``taskorbit.outcome``               ack / retry / dead_letter
=================================== ===========================================

On publish, the current OpenTelemetry context is injected into the message's
attributes with the globally configured propagator (W3C ``traceparent`` and
``tracestate`` by default); on dispatch it is extracted, so the handler span is a
child of the producer's span and any span the handler starts is a child of it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from taskorbit.extras import needs_extra

with needs_extra("OpenTelemetryHooks", "otel", "opentelemetry"):
    from opentelemetry import context, propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

from taskorbit.hooks import Hooks
from taskorbit.message import Message, Result

_SYSTEMS = {
    "sqs": "aws_sqs",
    "pubsub": "gcp_pubsub",
    "redis-streams": "redis",
    "redis-pubsub": "redis",
    "memory": "taskorbit_memory",
}


class OpenTelemetryHooks(Hooks):
    """Spans per handler run plus trace propagation through message attributes."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        system: str = "taskorbit",
        propagate_context: bool = True,
    ) -> None:
        self._tracer = trace.get_tracer("taskorbit", tracer_provider=tracer_provider)
        self.system = _SYSTEMS.get(system, system)
        self.propagate_context = propagate_context
        # id(message) -> (span, context token): dispatch and settling of one
        # message run on the same worker thread.
        self._running: dict[int, tuple[trace.Span, object]] = {}

    @classmethod
    def for_transport(cls, transport: Any, **kwargs: Any) -> OpenTelemetryHooks:
        return cls(system=getattr(transport, "name", "taskorbit"), **kwargs)

    def on_publish(self, message: Message) -> None:
        if self.propagate_context:
            propagate.inject(message.attributes)

    def on_dispatch(self, message: Message) -> None:
        parent = propagate.extract(message.attributes) if self.propagate_context else None
        span = self._tracer.start_span(
            f"process {message.topic}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": self.system,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": message.topic,
                "messaging.message.id": message.id,
                "messaging.message.body.size": len(message.body),
                "taskorbit.attempt": message.attempt,
            },
        )
        token = context.attach(trace.set_span_in_context(span))
        self._running[id(message)] = (span, token)

    def _end(self, message: Message, outcome: str, error: str | None = None) -> None:
        running = self._running.pop(id(message), None)
        if running is None:
            return
        span, token = running
        span.set_attribute("taskorbit.outcome", outcome)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()
        # Attached in another context (cannot happen today): nothing to restore.
        with contextlib.suppress(Exception):
            context.detach(token)  # type: ignore[arg-type]

    def on_error(self, message: Message | None, error: BaseException) -> None:
        if message is None:
            return
        running = self._running.get(id(message))
        if running is not None:
            running[0].record_exception(error)

    def on_complete(self, message: Message, result: Result, duration_s: float) -> None:
        self._end(message, "ack")

    def on_retry(self, message: Message, delay_s: float, reason: str) -> None:
        self._end(message, "retry", reason)

    def on_dead_letter(self, message: Message, reason: str) -> None:
        self._end(message, "dead_letter", reason)
