"""Loading ``module:app`` and layering its settings: flags > TASKORBIT_* env > app.

Kept apart from cli.py so that the Django management command can reuse it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from taskorbit.app import Orbit
from taskorbit.errors import ConfigurationError
from taskorbit.worker.ring import Overflow

# Exit codes, documented in docs/cli.md.
EXIT_OK = 0
EXIT_ERROR = 1  # a broker or runtime failure, or a message that was not found
EXIT_USAGE = 2  # bad flags or settings (argparse uses 2 as well)
EXIT_NO_APP = 3  # module:app could not be imported or is not an Orbit
EXIT_UNDRAINED = 4  # shutdown deadline passed with handlers still running


class AppLoadError(Exception):
    """``module:app`` did not name an importable Orbit; the message says why."""


def load_app(spec: str) -> Orbit:
    """Import ``package.module:attribute`` (attribute defaults to ``app``).

    The current directory goes first on ``sys.path``, as ``python -m`` would do,
    so ``taskorbit worker tasks:app`` finds ./tasks.py.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise AppLoadError(f"expected module:app (e.g. myproject.tasks:app), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise AppLoadError(f"cannot import {module_name!r}: {e}") from e
    target: Any = module
    for part in (attribute or "app").split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppLoadError(f"{module_name!r} has no attribute {attribute or 'app'!r}") from None
    if isinstance(getattr(target, "orbit", None), Orbit):
        target = target.orbit  # a framework extension (taskorbit.contrib.flask.TaskOrbit)
    elif callable(target) and not isinstance(target, Orbit):
        target = target()  # an app factory
    if not isinstance(target, Orbit):
        raise AppLoadError(f"{spec!r} is a {type(target).__name__}, not a taskorbit.Orbit")
    return target


@dataclass(frozen=True)
class Setting:
    """One worker option: its env variable and how to parse and validate it."""

    name: str
    parse: Callable[[str], Any]

    @property
    def env(self) -> str:
        return "TASKORBIT_" + self.name.upper()


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be >= 0 seconds")
    return value


def _overflow(text: str) -> str:
    return Overflow(text.lower()).value


WORKER_SETTINGS = (
    Setting("concurrency", _positive_int),
    Setting("buffer_size", _positive_int),
    Setting("overflow", _overflow),
    Setting("processes", _positive_int),
    Setting("shutdown_timeout", _seconds),
    Setting("log_level", str.upper),
    Setting("health_file", str),
    Setting("health_interval", _seconds),
    Setting("status", str.lower),
    Setting("status_interval", _seconds),
)


def resolve(flags: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """The value of each worker setting: the flag when given, else the env var.

    Settings given neither way are left out, so the app object's own value stays.
    Raises ConfigurationError naming the variable when an env value is invalid.
    """
    chosen: dict[str, Any] = {}
    for setting in WORKER_SETTINGS:
        if flags.get(setting.name) is not None:
            chosen[setting.name] = flags[setting.name]
            continue
        raw = environ.get(setting.env)
        if raw is None or raw == "":
            continue
        try:
            chosen[setting.name] = setting.parse(raw)
        except ValueError as e:
            raise ConfigurationError(f"{setting.env}={raw!r} is invalid: {e}") from None
    return chosen


def apply(app: Orbit, settings: Mapping[str, Any]) -> None:
    """Set the app's own options from ``settings`` (before it starts)."""
    for name in ("concurrency", "buffer_size", "shutdown_timeout"):
        if name in settings:
            setattr(app, name, settings[name])
    if "overflow" in settings:
        app.overflow = Overflow(settings["overflow"])
