"""Loading ``module:app`` and layering its settings: flags > TASKORBIT_* env > app.

Kept apart from main.py so that the Django management commands can reuse it.

Loading is strict about what it calls: only a plain function that takes no
required arguments is an app factory. Calling anything else "to see what comes
out" is how a Flask application ended up called as a WSGI app with no arguments
(``TypeError: Flask.__call__() missing 2 required positional arguments``); now a
Flask application leads to the Orbit its TaskOrbit extension registered, a Django
application to the project's Orbit, and anything else to a sentence naming what
it is and what to pass instead.

Every worker setting is parsed by one function whether it comes from a flag or
from its variable, so ``--concurrency 0`` and ``TASKORBIT_CONCURRENCY=0`` fail
alike: one sentence and exit status 2.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from taskorbit.app import Orbit
from taskorbit.errors import ConfigurationError
from taskorbit.task import Task
from taskorbit.transports.memory import MemoryTransport
from taskorbit.worker.ring import MAX_CAPACITY, Overflow

# Exit codes, documented in docs/cli.md.
EXIT_OK = 0
EXIT_ERROR = 1  # a broker or runtime failure, or a message that was not found
EXIT_USAGE = 2  # bad flags or settings (argparse uses 2 as well)
EXIT_NO_APP = 3  # module:app could not be imported or is not an Orbit
EXIT_UNDRAINED = 4  # shutdown deadline passed with handlers still running


class AppLoadError(Exception):
    """``module:app`` did not name an importable Orbit; the message says why."""


# -- module:app -------------------------------------------------------------------


def load_app(spec: str) -> Orbit:
    """Import ``package.module:attribute`` (attribute defaults to ``app``).

    The current directory goes first on ``sys.path``, as ``python -m`` would do,
    so ``taskorbit worker tasks:app`` finds ./tasks.py. The attribute may be an
    Orbit, a framework extension with an ``.orbit`` (Flask's TaskOrbit), a Flask
    application the extension was initialised on, a Django application (WSGI or
    ASGI) of a project with ``taskorbit.contrib.django`` installed, or a plain
    function of no arguments returning one of these. A ConfigurationError raised
    while importing (a bad transport URL) is left to the caller: exit status 2.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise AppLoadError(f"expected module:app (e.g. myproject.tasks:app), got {spec!r}")
    attribute = attribute or "app"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = _import(module_name)
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            found = _orbits_in(module)
            defines = f"; it defines `{module_name}:{found[0]}`" if found else ""
            raise AppLoadError(f"{module_name!r} has no attribute {attribute!r}{defines}") from None
    shown = f"`{module_name}:{attribute}`"
    orbit = _orbit_behind(target)
    if orbit is not None:
        return orbit
    if not _is_factory(target):
        raise AppLoadError(f"{shown} is {_describe(target)}; {_advice(target, module)}")
    made = _call_factory(target, shown)
    orbit = _orbit_behind(made)
    if orbit is None:
        raise AppLoadError(
            f"{shown} is an app factory that returned {_describe(made)}; {_advice(made, module)}"
        )
    return orbit


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ConfigurationError:
        raise  # a bad setting in the app, such as its transport URL: exit 2
    except ImportError as e:
        # Missing extras (taskorbit.extras) and DJANGO_SETTINGS_MODULE problems
        # (contrib.django.worker) arrive here as one sentence already.
        raise AppLoadError(f"cannot import {module_name!r}: {e}") from e
    except Exception as e:
        raise AppLoadError(f"cannot import {module_name!r}: {_failure(e)}") from e


def _call_factory(factory: Callable[[], Any], shown: str) -> Any:
    try:
        return factory()
    except ConfigurationError:
        raise
    except Exception as e:
        raise AppLoadError(f"the app factory {shown} failed: {_failure(e)}") from e


def _failure(e: BaseException) -> str:
    """``ZeroDivisionError: division by zero (web.py, line 12)``: the error and the
    innermost line it came from, instead of a traceback."""
    where = ""
    frames = traceback.extract_tb(e.__traceback__)
    if frames:
        last = frames[-1]
        try:
            path = os.path.relpath(last.filename)
        except ValueError:  # on another drive (Windows)
            path = last.filename
        where = f" ({path}, line {last.lineno})"
    return f"{type(e).__name__}: {e}{where}"


def _orbit_behind(target: Any) -> Orbit | None:
    """The Orbit ``target`` is or leads to, or None."""
    if isinstance(target, Orbit):
        return target
    extension = _extension_orbit(target)  # taskorbit.contrib.flask.TaskOrbit
    if extension is not None:
        return extension
    if _is_flask_app(target):
        # TaskOrbit.init_app registers the extension on the Flask application.
        return _extension_orbit(getattr(target, "extensions", {}).get("taskorbit"))
    if _is_django_app(target):
        from taskorbit.contrib.django import installed_app

        return installed_app()
    return None


def _extension_orbit(target: Any) -> Orbit | None:
    """``target.orbit`` when that is an Orbit. Any error reading it counts as none:
    a module's lazy objects (Django's settings) raise more than AttributeError."""
    try:
        orbit = getattr(target, "orbit", None)
    except Exception:
        return None
    return orbit if isinstance(orbit, Orbit) else None


def _is_flask_app(target: Any) -> bool:
    return any(c.__name__ == "Flask" and c.__module__.startswith("flask") for c in _mro(target))


def _is_django_app(target: Any) -> bool:
    # WSGIHandler or ASGIHandler, as get_wsgi_application() returns them.
    return any(c.__module__.startswith("django.core.handlers.") for c in _mro(target))


def _mro(target: Any) -> tuple[type, ...]:
    return type(target).__mro__


def _is_factory(target: Any) -> bool:
    """A plain function (not a class, a method or a callable object) whose every
    parameter has a default: calling it can only build an app."""
    if not inspect.isfunction(target):
        return False
    return all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in inspect.signature(target).parameters.values()
    )


def _describe(target: Any) -> str:
    """What ``target`` is, in words a user recognises."""
    if isinstance(target, Task):
        return f"the handler of topic {target.topic!r}, not the Orbit it is registered on"
    if _is_flask_app(target):
        return "a Flask application"  # without the TaskOrbit extension
    if _is_django_app(target):
        return 'a Django application without "taskorbit.contrib.django" in INSTALLED_APPS'
    if inspect.ismodule(target):
        return f"the module {target.__name__}"
    if inspect.isclass(target):
        return f"the class {target.__qualname__}, not an Orbit"
    if inspect.isfunction(target):
        params = ", ".join(inspect.signature(target).parameters)
        return f"the function {target.__name__}({params}), which takes arguments"
    kind = type(target)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    article = "an" if name[0].lower() in "aeiou" else "a"
    return f"{article} {name}, not a taskorbit.Orbit"


def _advice(target: Any, module: ModuleType) -> str:
    """What to pass instead of ``target``."""
    if _is_django_app(target):
        return (
            'add "taskorbit.contrib.django" to INSTALLED_APPS, then pass '
            "taskorbit.contrib.django.worker:app or run python manage.py taskorbit_worker"
        )
    found = _orbits_in(module)
    if found:
        return f"pass the Orbit, e.g. `{module.__name__}:{found[0]}`"
    if _is_flask_app(target):
        return "call TaskOrbit.init_app on it, or pass the TaskOrbit as module:attribute"
    return "pass the taskorbit.Orbit (or TaskOrbit extension) as module:attribute"


def _orbits_in(module: ModuleType) -> list[str]:
    """Names in ``module`` of Orbits and of extensions with one (TaskOrbit)."""
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (isinstance(value, Orbit) or _extension_orbit(value) is not None)
    ]


# -- what publish and dlq need --------------------------------------------------

BROKER_ADVICE = (
    "configure a broker: a transport URL in the app "
    "(Orbit(transport_from_url('redis://localhost:6379/0'))), TASKORBIT_TRANSPORT in "
    "Flask's app.config, or TASKORBIT['TRANSPORT'] in Django's settings"
)


def require_broker(app: Orbit, name: str, command: str) -> None:
    """Refuse an app on the in-memory transport: ``publish`` and ``dlq`` run in a
    process of their own, which shares no memory with the worker's. (Without this,
    ``publish`` printed ``mem-1`` and the message vanished with the process.)"""
    if not isinstance(app.transport, MemoryTransport):
        return
    if command == "publish":
        why = "a message published here would vanish when this command exits"
    else:
        why = "its dead letters live inside the worker's process, out of this command's reach"
    raise ConfigurationError(
        f"{name} uses the in-memory transport, which lives inside one process: {why}; "
        f"{BROKER_ADVICE}"
    )


# -- worker settings --------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One worker option: its flag, its env variable, and how to parse and check
    its text (the same function for both)."""

    name: str
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None
    #: The value of the bare flag when it may be given without one (``--fail-fast``).
    const: str | None = None

    @property
    def env(self) -> str:
        return "TASKORBIT_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _buffer_size(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_CAPACITY:
        raise ValueError(f"must be at most {MAX_CAPACITY}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if math.isnan(value) or value < 0:
        raise ValueError("must be >= 0 seconds")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0 or math.isinf(value):
        raise ValueError("must be a number of seconds greater than 0")
    return value


def _choice(*values: str) -> Callable[[str], str]:
    lookup = {v.lower(): v for v in values}

    def parse(text: str) -> str:
        try:
            return lookup[text.lower()]
        except KeyError:
            raise ValueError(f"must be one of {', '.join(values)}") from None

    return parse


def _flag(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError("must be true or false (or 1/0, yes/no)")


def _path(text: str) -> str:
    if not text.strip():
        raise ValueError("must be a file path")
    return text


OVERFLOWS = tuple(o.value for o in Overflow)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
STATUS_MODES = ("auto", "line", "log", "off")
TRACEBACK_MODES = ("first", "always", "never")

WORKER_SETTINGS = (
    Setting("concurrency", _positive_int, "handlers running at once", "N"),
    Setting("buffer_size", _buffer_size, "slots in the local ring (a power of two)", "N"),
    Setting(
        "overflow", _choice(*OVERFLOWS), "ring policy when full", "{" + ",".join(OVERFLOWS) + "}"
    ),
    Setting("processes", _positive_int, "worker processes (default 1)", "N"),
    Setting("shutdown_timeout", _seconds, "seconds to drain on SIGTERM", "S"),
    Setting(
        "log_level", _choice(*LOG_LEVELS), "log level (INFO)", "{" + ",".join(LOG_LEVELS) + "}"
    ),
    Setting("health_file", _path, "liveness file touched while consuming", "PATH"),
    Setting("health_interval", _positive_seconds, "seconds between touches (5)", "S"),
    Setting(
        "status",
        _choice(*STATUS_MODES),
        "live line on a terminal, log lines otherwise (auto)",
        "{" + ",".join(STATUS_MODES) + "}",
    ),
    Setting("status_interval", _positive_seconds, "seconds between status reports", "S"),
    Setting(
        "fail_fast",
        _flag,
        "exit 1 at start if the broker cannot be reached (--no-fail-fast turns it off)",
        "",
        const="true",
    ),
    Setting(
        "startup_timeout",
        _positive_seconds,
        "give up after S seconds of trying to reach the broker (default: retry for ever)",
        "S",
    ),
    Setting(
        "log_tracebacks",
        _choice(*TRACEBACK_MODES),
        "handler tracebacks: the first failure of each message, always, never (first)",
        "{" + ",".join(TRACEBACK_MODES) + "}",
    ),
)


def resolve(
    flags: Mapping[str, Any], environ: Mapping[str, str], notes: list[str] | None = None
) -> dict[str, Any]:
    """The value of each worker setting: the flag when given, else the env var.

    Both go through the setting's parser. Settings given neither way are left
    out, so the app object's own value stays. Raises ConfigurationError naming the
    flag or variable when a value is invalid. A buffer size that is not a power of
    two is rounded up, as the ring would, and said in ``notes`` (for the log), so
    that supervised children get the rounded value and say nothing.
    """
    chosen: dict[str, Any] = {}
    for setting in WORKER_SETTINGS:
        given = flags.get(setting.name)
        if given is not None:
            raw, source = str(given), f"{setting.flag} {given}"
        else:
            raw, source = (
                environ.get(setting.env, ""),
                f"{setting.env}={environ.get(setting.env)!r}",
            )
            if raw == "":
                continue
        try:
            chosen[setting.name] = setting.parse(raw)
        except ValueError as e:
            raise ConfigurationError(f"{source} is invalid: {e}") from None
        if setting.name == "buffer_size":
            size = chosen["buffer_size"]
            capacity = 1 << (size - 1).bit_length()
            if capacity != size:
                chosen["buffer_size"] = capacity
                if notes is not None:
                    notes.append(
                        f"{source} is rounded up to {capacity}: the ring's capacity is a "
                        "power of two"
                    )
    return chosen


def apply(app: Orbit, settings: Mapping[str, Any]) -> None:
    """Set the app's own options from ``settings`` (before it starts)."""
    for name in ("concurrency", "buffer_size", "shutdown_timeout"):
        if name in settings:
            setattr(app, name, settings[name])
    if "overflow" in settings:
        app.overflow = Overflow(settings["overflow"])
