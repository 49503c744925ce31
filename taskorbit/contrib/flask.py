"""Flask extension: configure taskorbit from ``app.config``, publish from views, and
run handlers inside the Flask application context.

::

    from flask import Flask
    from taskorbit.contrib.flask import TaskOrbit

    tasks = TaskOrbit()

    @tasks.task("email.send")
    def send_email(to: str) -> None:
        current_app.logger.info("sending to %s", to)   # the app context is there

    def create_app():
        app = Flask(__name__)
        app.config["TASKORBIT_TRANSPORT"] = "redis://localhost:6379/0"
        tasks.init_app(app)
        return app

Views publish with ``send_email.delay(...)``; the worker runs
``taskorbit worker myapp:tasks`` (the module must call ``init_app`` on import, for
example ``app = create_app()`` at module level).
"""

from __future__ import annotations

from typing import Any

from taskorbit.extras import needs_extra

with needs_extra("the Flask extension (taskorbit.contrib.flask)", "flask", "flask"):
    from flask import Flask

from taskorbit.app import Orbit
from taskorbit.contrib import configure, prefixed
from taskorbit.hooks import Hooks
from taskorbit.message import Message, Result
from taskorbit.task import TaskDecorator

CONFIG_PREFIX = "TASKORBIT_"


class AppContextHooks(Hooks):
    """Pushes ``flask_app.app_context()`` around each handler run."""

    def __init__(self, flask_app: Flask) -> None:
        self.flask_app = flask_app
        self._contexts: dict[int, Any] = {}  # id(message) -> pushed AppContext

    def on_dispatch(self, message: Message) -> None:
        ctx = self.flask_app.app_context()
        ctx.push()
        self._contexts[id(message)] = ctx

    def _pop(self, message: Message) -> None:
        ctx = self._contexts.pop(id(message), None)
        if ctx is not None:
            ctx.pop()

    def on_complete(self, message: Message, result: Result, duration_s: float) -> None:
        self._pop(message)

    def on_retry(self, message: Message, delay_s: float, reason: str) -> None:
        self._pop(message)

    def on_dead_letter(self, message: Message, reason: str) -> None:
        self._pop(message)


class TaskOrbit:
    """The extension. ``orbit`` is the underlying :class:`Orbit`; tasks may be
    registered before ``init_app`` (the transport is set from the config then)."""

    def __init__(self, app: Flask | None = None, *, orbit: Orbit | None = None) -> None:
        self.orbit = orbit if orbit is not None else Orbit()
        self.flask_app: Flask | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        configure(self.orbit, prefixed(app.config, CONFIG_PREFIX))
        self.orbit.hooks.add(AppContextHooks(app))
        self.flask_app = app
        app.extensions["taskorbit"] = self

    def task(self, topic: str, **options: Any) -> TaskDecorator:
        """:meth:`taskorbit.Orbit.task`: the handler keeps its payload type
        (``Task[Welcome]``), so mypy checks ``.delay()`` calls."""
        decorator: TaskDecorator = self.orbit.task(topic, **options)
        return decorator

    def publish(self, topic: str, payload: Any, **options: Any) -> str:
        return self.orbit.publish(topic, payload, **options)
