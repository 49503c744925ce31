"""The hook adapters on a real worker: W3C trace propagation, OpenTelemetry spans,
Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

import taskorbit as orbit
from taskorbit.observability import tracing
from taskorbit.observability.otel import OpenTelemetryHooks
from taskorbit.observability.prometheus import PrometheusHooks
from taskorbit.observability.tracing import TraceContext, TracingHooks

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def make_app(*hooks: orbit.Hooks) -> tuple[orbit.Orbit, orbit.MemoryTransport]:
    transport = orbit.MemoryTransport()
    app = orbit.Orbit(transport, hooks=hooks, ack_interval_s=0.01, poll_timeout=0.05)
    return app, transport


def run_until_idle(app: orbit.Orbit, transport: orbit.MemoryTransport) -> None:
    app.start()
    try:
        assert transport.wait_idle(10)
    finally:
        app.stop(5)


# -- W3C trace context without OpenTelemetry --------------------------------------


def test_a_handler_continues_the_producers_trace_and_passes_it_on() -> None:
    app, transport = make_app(TracingHooks())
    seen: dict[str, TraceContext | None] = {}

    @app.task("first")
    def first(n: int, ctx: orbit.Context) -> None:
        seen["first"] = tracing.current()
        seen["first_header"] = TraceContext.parse(ctx.attributes["traceparent"])
        app.publish("second", n)

    @app.task("second")
    def second(n: int, ctx: orbit.Context) -> None:
        seen["second_header"] = TraceContext.parse(ctx.attributes["traceparent"])

    with tracing.use(TraceContext.parse(PARENT)):
        app.publish("first", 1)
    run_until_idle(app, transport)

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    first_span, header, onward = seen["first"], seen["first_header"], seen["second_header"]
    assert first_span is not None and header is not None and onward is not None
    assert {first_span.trace_id, header.trace_id, onward.trace_id} == {trace_id}
    # Each hop is a new span: the send span, then the handler's, then the next send.
    assert len({"00f067aa0ba902b7", header.span_id, first_span.span_id, onward.span_id}) == 4


def test_bulk_publishing_injects_trace_context_too() -> None:
    app, transport = make_app(TracingHooks())
    with tracing.use(TraceContext.parse(PARENT)):
        app.publish_many("t", [1, 2])
    with transport._cond:  # a peek at what waits in the in-memory broker
        headers = [m.attributes.get("traceparent", "") for m in transport._ready]
    assert len(headers) == 2 and all("4bf92f3577b34da6a3ce929d0e0e4736" in h for h in headers)


def test_messages_published_outside_a_trace_carry_none_unless_asked() -> None:
    app, _ = make_app(TracingHooks())
    assert "traceparent" not in app.message("t", 1).attributes
    rooted, _ = make_app(TracingHooks(start_traces=True))
    assert TraceContext.parse(rooted.message("t", 1).attributes["traceparent"]) is not None


@pytest.mark.parametrize(
    "header",
    ["", "garbage", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
     "00-00000000000000000000000000000000-00f067aa0ba902b7-01"],
)  # fmt: skip
def test_invalid_traceparent_headers_are_ignored(header: str) -> None:
    assert TraceContext.parse(header) is None


# -- OpenTelemetry -------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_each_handler_run_is_a_consumer_span_under_the_producers_span(spans) -> None:  # type: ignore[no-untyped-def]
    provider, exporter = spans
    app, transport = make_app(OpenTelemetryHooks(provider, system="memory"))

    @app.task("email.send")
    def send(n: int) -> orbit.Result | None:
        return orbit.dead_letter("bounced") if n == 2 else None

    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("web request") as request_span:
        app.publish("email.send", 1)
        app.publish("email.send", 2)
    run_until_idle(app, transport)

    handled = [s for s in exporter.get_finished_spans() if s.name == "process email.send"]
    assert len(handled) == 2
    for span in handled:
        assert span.kind is SpanKind.CONSUMER
        assert span.context.trace_id == request_span.get_span_context().trace_id
        assert span.parent is not None
        assert span.parent.span_id == request_span.get_span_context().span_id
        assert span.attributes["messaging.system"] == "taskorbit_memory"
        assert span.attributes["messaging.destination.name"] == "email.send"
        assert span.attributes["messaging.operation.type"] == "process"
        assert span.attributes["taskorbit.attempt"] == 1
    outcomes = {s.attributes["taskorbit.outcome"]: s for s in handled}
    assert outcomes["dead_letter"].status.status_code is StatusCode.ERROR
    assert outcomes["ack"].status.status_code is StatusCode.UNSET


# -- Prometheus ---------------------------------------------------------------------


def test_prometheus_counts_outcomes_per_topic_and_times_handlers() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusHooks(registry)
    app, transport = make_app(metrics)
    metrics.bind(app)
    attempts: dict[int, int] = {}

    @app.task("job", max_retries=1, base_delay=0.01)
    def job(n: int) -> orbit.Result | None:
        attempts[n] = attempts.get(n, 0) + 1
        if n == 1 and attempts[n] == 1:
            raise RuntimeError("flaky")
        return orbit.dead_letter("bad") if n == 2 else None

    app.publish_many("job", [0, 1, 2])
    run_until_idle(app, transport)

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    # The short retry waits in the worker's timer wheel, not at the broker: the
    # broker handed over three messages.
    assert value("taskorbit_messages_received_total", topic="job") == 3
    assert value("taskorbit_messages_total", topic="job", outcome="ack") == 2
    assert value("taskorbit_messages_total", topic="job", outcome="retry") == 1
    assert value("taskorbit_messages_total", topic="job", outcome="dead_letter") == 1
    assert value("taskorbit_handler_errors_total", topic="job", error="RuntimeError") == 1
    assert value("taskorbit_handler_duration_seconds_count", topic="job", outcome="ack") == 2
    assert value("taskorbit_published_total", topic="job") == 3
    assert value("taskorbit_ring_depth") == 0
