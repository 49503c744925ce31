"""Test your own tasks without a broker and without threads (docs/testing.md).

``with TestRun(app) as run:`` sends what the app publishes to an in-memory queue
on a clock the test controls; ``run.drain()`` runs it through the worker's own
pipeline and settler, retries and ETAs included, skipping their delays, and
returns a :class:`Report` of every delivery::

    with TestRun(app) as run:
        charge.delay(Order(id=42))
        report = run.drain()
    assert report.fates == ["retried", "acked"]
    assert [d.delay for d in report.retried] == [1.0]

- ``TestRun(app, eager=True)``: ``.delay()`` runs the handler at once;
- ``raise_errors=True``: a handler's exception reaches the test instead of a retry;
- ``run.advance(seconds)``: move the clock and run what falls due;
- ``run.queued``, ``run.dead_letters`` (reason, attempts), ``run.report``;
- :func:`make_context`: a ``Context`` for calling a handler directly.

The pytest fixtures ``taskorbit_run`` and ``taskorbit_run_factory`` live in
:mod:`taskorbit.testing.pytest_plugin`. This package does not import pytest.
"""

from taskorbit.testing.report import Delivery, Fate, Queued, Report
from taskorbit.testing.run import DrainLimitReached, TestRun, make_context
from taskorbit.testing.transport import TestTransport

__all__ = [
    "Delivery",
    "DrainLimitReached",
    "Fate",
    "Queued",
    "Report",
    "TestRun",
    "TestTransport",
    "make_context",
]
