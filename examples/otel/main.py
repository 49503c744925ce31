"""OpenTelemetry: a web request's trace continues into the handler that its
message runs, through the message's ``traceparent`` attribute.

Needs ``pip install 'taskorbit[otel]' opentelemetry-sdk``; the library itself
imports only opentelemetry-api.

    python examples/otel/main.py
"""

from __future__ import annotations

import threading

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import taskorbit as orbit
from taskorbit.observability.otel import OpenTelemetryHooks

exporter = InMemorySpanExporter()  # a real service would export with OTLP
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("example")

app = orbit.Orbit(hooks=[OpenTelemetryHooks(system="memory")])
done = threading.Event()


@app.task("invoice.render")
def render(invoice_id: int) -> None:
    with tracer.start_as_current_span("render pdf"):  # a child of the handler span
        pass
    done.set()


if __name__ == "__main__":
    with tracer.start_as_current_span("POST /invoices"):
        render.delay(7)
    with app:
        done.wait(10)
    provider.force_flush()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    names_by_id = {s.context.span_id: s.name for s in spans.values()}
    for name in ("POST /invoices", "process invoice.render", "render pdf"):
        span = spans[name]
        print(
            f"{name:<24} trace {span.context.trace_id:032x}  parent: "
            f"{names_by_id.get(span.parent.span_id) if span.parent else '-'}"
        )
    print("one trace:", len({s.context.trace_id for s in spans.values()}) == 1)
