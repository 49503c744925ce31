"""Prometheus metrics from the hooks (``pip install 'taskorbit[prometheus]'``).

==================================== ========= ==================================
``taskorbit_messages_received_total`` counter   by topic
``taskorbit_messages_total``          counter   by topic and outcome (ack, retry,
                                                dead_letter, duplicate, dropped)
``taskorbit_handler_errors_total``    counter   by topic and exception type
``taskorbit_handler_duration_seconds``histogram by topic and outcome, from dispatch
                                                to the outcome
``taskorbit_published_total``         counter   by topic
``taskorbit_ring_depth``              gauge     messages waiting in the ring, read
                                                when scraped (``bind(app)``)
==================================== ========= ==================================

::

    metrics = PrometheusHooks()
    app = Orbit(transport, hooks=[metrics])
    metrics.bind(app)                       # the ring depth gauge reads app.stats()
    prometheus_client.start_http_server(9100)
"""

from __future__ import annotations

import time
from typing import Any

from taskorbit.extras import needs_extra

with needs_extra("PrometheusHooks", "prometheus", "prometheus_client"):
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from taskorbit.hooks import Hooks
from taskorbit.message import Message, Result

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class PrometheusHooks(Hooks):
    def __init__(
        self, registry: CollectorRegistry = REGISTRY, *, namespace: str = "taskorbit"
    ) -> None:
        self.received = Counter(
            "messages_received", "Messages handed over by the broker", ["topic"],
            namespace=namespace, registry=registry,
        )  # fmt: skip
        self.outcomes = Counter(
            "messages", "Messages settled, by outcome", ["topic", "outcome"],
            namespace=namespace, registry=registry,
        )  # fmt: skip
        self.errors = Counter(
            "handler_errors", "Handler exceptions and decode failures", ["topic", "error"],
            namespace=namespace, registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            "handler_duration_seconds", "From dispatch to outcome", ["topic", "outcome"],
            namespace=namespace, registry=registry, buckets=DURATION_BUCKETS,
        )  # fmt: skip
        self.published = Counter(
            "published", "Messages published by this process", ["topic"],
            namespace=namespace, registry=registry,
        )  # fmt: skip
        self.ring_depth = Gauge(
            "ring_depth", "Messages waiting in the local ring buffer",
            namespace=namespace, registry=registry,
        )  # fmt: skip
        # id(message) -> time.perf_counter() at dispatch
        self._started: dict[int, float] = {}

    def bind(self, app: Any) -> None:
        """Read the ring depth from ``app.stats()`` whenever the gauge is scraped."""
        self.ring_depth.set_function(lambda: float(app.stats().get("ring_length", 0)))

    def _settled(self, message: Message, outcome: str) -> None:
        self.outcomes.labels(message.topic, outcome).inc()
        started = self._started.pop(id(message), None)
        if started is not None:
            self.duration.labels(message.topic, outcome).observe(time.perf_counter() - started)

    def on_receive(self, message: Message) -> None:
        self.received.labels(message.topic).inc()

    def on_dispatch(self, message: Message) -> None:
        self._started[id(message)] = time.perf_counter()

    def on_complete(self, message: Message, result: Result, duration_s: float) -> None:
        self._settled(message, "ack")

    def on_retry(self, message: Message, delay_s: float, reason: str) -> None:
        self._settled(message, "retry")

    def on_dead_letter(self, message: Message, reason: str) -> None:
        self._settled(message, "dead_letter")

    def on_duplicate(self, message: Message) -> None:
        self._settled(message, "duplicate")

    def on_drop(self, message: Message, reason: str) -> None:
        self._settled(message, "dropped")

    def on_error(self, message: Message | None, error: BaseException) -> None:
        self.errors.labels(message.topic if message else "", type(error).__name__).inc()

    def on_publish(self, message: Message) -> None:
        self.published.labels(message.topic).inc()
