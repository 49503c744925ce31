"""Framework integrations (Django, Flask) and what they share: building a
transport and an app's options from a settings mapping.

Settings keys (Django ``settings.TASKORBIT["KEY"]``, Flask
``app.config["TASKORBIT_KEY"]``):

==================== ==========================================================
``TRANSPORT``        a Transport, a callable returning one, or a URL:
                     ``memory://``; ``redis://host:6379/0?stream=jobs`` (Redis
                     Streams); ``sqs://QUEUE_NAME`` or an SQS queue URL
                     (``https://sqs.REGION.amazonaws.com/ACCOUNT/NAME``);
                     ``pubsub://projects/P/subscriptions/S?topic=T``
``TRANSPORT_OPTIONS`` keyword arguments for the transport class (``dlq_url``...)
``CONCURRENCY``, ``BUFFER_SIZE``, ``OVERFLOW``, ``SHUTDOWN_TIMEOUT``
                     the worker options of :class:`taskorbit.Orbit`
``HOOKS``            a list of :class:`taskorbit.Hooks` instances
==================== ==========================================================

A URL is turned into a transport by :func:`taskorbit.transports.url.transport_from_url`
(also importable from here), which converts query values to the types the
transport takes and refuses unknown keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from taskorbit.app import Orbit
from taskorbit.errors import ConfigurationError
from taskorbit.transports.base import Transport
from taskorbit.transports.url import redact, transport_from_url
from taskorbit.worker.ring import Overflow


def configure(orbit: Orbit, settings: Mapping[str, Any]) -> Orbit:
    """Apply framework settings (keys without prefix) to an Orbit not yet running."""
    if orbit.running:
        raise ConfigurationError("configure the taskorbit app before starting its worker")
    transport = settings.get("TRANSPORT")
    if transport is not None:
        orbit.transport = _transport(transport, settings.get("TRANSPORT_OPTIONS") or {})
    for key, attr in (
        ("CONCURRENCY", "concurrency"),
        ("BUFFER_SIZE", "buffer_size"),
        ("SHUTDOWN_TIMEOUT", "shutdown_timeout"),
    ):
        if settings.get(key) is not None:
            setattr(orbit, attr, settings[key])
    if settings.get("OVERFLOW") is not None:
        orbit.overflow = Overflow(settings["OVERFLOW"])
    for hooks in settings.get("HOOKS") or ():
        orbit.hooks.add(hooks)
    return orbit


def _transport(value: Any, options: Mapping[str, Any]) -> Transport:
    if isinstance(value, Transport):
        return value
    if isinstance(value, str):
        return transport_from_url(value, **options)
    if callable(value):
        built = value(**options) if options else value()
        if isinstance(built, Transport):
            return built
    raise ConfigurationError(
        f"TRANSPORT must be a Transport, a URL or a callable returning a Transport, got {value!r}"
    )


def prefixed(config: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``{"TASKORBIT_CONCURRENCY": 8}`` → ``{"CONCURRENCY": 8}``."""
    return {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}


Factory = Callable[[], Transport]

__all__ = ["configure", "prefixed", "redact", "transport_from_url"]
