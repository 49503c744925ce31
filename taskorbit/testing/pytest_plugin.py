"""pytest fixtures for testing taskorbit tasks (docs/testing.md).

Registered by the ``pytest11`` entry point ``taskorbit``, so installing taskorbit
is enough; without the entry point, load it with ``-p taskorbit.testing.pytest_plugin``.

- ``taskorbit_run``: a :class:`~taskorbit.testing.TestRun` of your app, entered
  for the test and left after it. Your app comes from the ``taskorbit_app``
  fixture: define it (usually in conftest.py), or set ``taskorbit_app =
  "package.module:app"`` in the pytest configuration. Options per test with the
  marker ``@pytest.mark.taskorbit(eager=True, raise_errors=True)``.
- ``taskorbit_run_factory``: ``taskorbit_run_factory(app, **options)`` enters a
  TestRun of any app (several apps, or options chosen in the test); each is left
  after the test, last first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from taskorbit.app import Orbit
from taskorbit.testing.run import HasOrbit, TestRun

_MARKER = "taskorbit"
_OPTIONS = ("eager", "raise_errors", "jitter", "idempotency_store", "max_deliveries")


class RunFactory(Protocol):
    """The type of the ``taskorbit_run_factory`` fixture."""

    def __call__(self, app: Orbit | HasOrbit, **options: Any) -> TestRun: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "taskorbit_app",
        "module:attribute of the taskorbit app the taskorbit_run fixture runs "
        "(e.g. shop.tasks:app); or define a taskorbit_app fixture",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(eager=False, raise_errors=False, jitter=False, max_deliveries=100000): "
        "options of the taskorbit_run fixture's TestRun",
    )


@pytest.fixture
def taskorbit_app(request: pytest.FixtureRequest) -> Orbit:
    """The app ``taskorbit_run`` runs: override this fixture, or name the app in the
    ``taskorbit_app`` ini option."""
    spec = str(request.config.getini("taskorbit_app") or "")
    if not spec:
        pytest.fail(
            "taskorbit_run needs your app: define a fixture named taskorbit_app that "
            "returns it (in conftest.py), or set taskorbit_app = 'package.module:app' in "
            "the pytest configuration",
            pytrace=False,
        )
    from taskorbit.cli.config import AppLoadError, load_app  # only for the ini option

    try:
        return load_app(spec)
    except AppLoadError as exc:
        pytest.fail(f"taskorbit_app = {spec!r}: {exc}", pytrace=False)


@pytest.fixture
def taskorbit_run_factory() -> Iterator[RunFactory]:
    """Enter a :class:`TestRun` of any app for this test: ``factory(app, eager=True)``."""
    with contextlib.ExitStack() as stack:

        def make(app: Orbit | HasOrbit, **options: Any) -> TestRun:
            return stack.enter_context(TestRun(app, **options))

        yield make


@pytest.fixture
def taskorbit_run(
    request: pytest.FixtureRequest, taskorbit_app: Orbit, taskorbit_run_factory: RunFactory
) -> TestRun:
    """A :class:`TestRun` of ``taskorbit_app`` for this test, with the options of the
    closest ``@pytest.mark.taskorbit(...)``."""
    marker = request.node.get_closest_marker(_MARKER)
    options: dict[str, Any] = {}
    if marker is not None:
        unknown = sorted(set(marker.kwargs) - set(_OPTIONS))
        if marker.args or unknown:
            given = [*map(repr, marker.args), *(f"{name}=" for name in unknown)]
            pytest.fail(
                f"@pytest.mark.{_MARKER} takes keyword options among {', '.join(_OPTIONS)}; "
                f"got {', '.join(given)}",
                pytrace=False,
            )
        options = dict(marker.kwargs)
    return taskorbit_run_factory(taskorbit_app, **options)
