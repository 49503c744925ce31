"""Ready-made hooks for watching a worker: logging (:class:`taskorbit.LoggingHooks`),
Prometheus (:mod:`.prometheus`), OpenTelemetry (:mod:`.otel`) and W3C trace context
propagation without any OpenTelemetry package (:mod:`.tracing`).

The optional ones import their library only when their module is imported.
"""
