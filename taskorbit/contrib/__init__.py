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

A URL's query values are text, while the transports want numbers, flags and
None: each value is converted to the type the constructor's annotation names, so
that ``?lease_s=60`` is 60.0 and ``?delete_acked=false`` is False rather than a
truthy string. Keys that belong to the client library (redis-py's
``?ssl_cert_reqs=none``) stay in the URL the client is built from. Anything else
is a typo and stops the app at start, naming the valid keys; no message shows
the URL's password.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

from taskorbit.app import Orbit
from taskorbit.errors import ConfigurationError
from taskorbit.ring import Overflow
from taskorbit.transports.base import Transport

# The scalar types a query value can be converted to, by annotation name.
_SCALARS: dict[str, type | None] = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "None": None,
    "NoneType": None,
}
_INVALID = object()  # what _parse returns for text that is not of the type
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
_EXPECTED: dict[type | None, str] = {
    int: "an integer",
    float: "a number",
    bool: "true or false (or 1/0, yes/no)",
    str: "text",
    None: "none",
}
# redis-py keyword arguments a URL must not set: the host and path come from the
# URL itself, and taskorbit needs bytes from the server (decode_responses=False).
_REDIS_NOT_FROM_URL = frozenset(
    {
        "host",
        "port",
        "path",
        "connection_class",
        "decode_responses",
        "retry_on_error",  # a list of exception classes, which text cannot name
        "ssl_ocsp_context",
    }
)
_SECRET_KEY = re.compile(r"(^|[?&])([^=&#]*(?:password|secret|token)[^=&#]*)=[^&#]*", re.I)


@dataclass(frozen=True)
class _Target:
    """The transport class a URL scheme names and how the URL maps onto it."""

    build: Callable[..., Transport]
    #: Constructor arguments the URL itself supplies (sqs://NAME → queue_name).
    given: dict[str, Any] = field(default_factory=dict)
    #: The argument that receives the URL (without taskorbit's query keys), if any.
    url_argument: str | None = None
    #: Arguments that conflict with the URL form, so no option may set them.
    taken: frozenset[str] = frozenset()
    #: Query keys left in the URL for the client library, with its converters.
    client_options: frozenset[str] = frozenset()
    client_parsers: Mapping[str, Callable[[str], Any]] = field(default_factory=dict)
    client_library: str = ""
    #: Client-library keys this scheme lacks but another has, with the advice.
    client_elsewhere: Mapping[str, str] = field(default_factory=dict)


def transport_from_url(url: str, **options: Any) -> Transport:
    """Build a transport from a URL; query parameters become keyword arguments.

    ``rediss://:pw@host:6380/0?stream=jobs&lease_s=60&maxlen=none&ssl_cert_reqs=none``
    builds ``RedisStreamsTransport("rediss://:pw@host:6380/0?ssl_cert_reqs=none",
    stream="jobs", lease_s=60.0, maxlen=None)``.

    Query values are converted to the annotated type: int, float, bool (true/false,
    1/0, yes/no), str, and ``none`` (or empty) for an optional argument.
    ``options`` (``TRANSPORT_OPTIONS``) are keyword arguments too and beat the
    query; they are taken as given, except that text meant for a number or a flag
    (a setting read from the environment) is converted like a query value. Raises
    ConfigurationError for an unknown key or a value of the wrong type.
    """
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    target = _target(url, parts, {key for key, _ in pairs})
    parameters = _parameters(target)
    kwargs = dict(target.given)
    kept: dict[str, str] = {}  # the client library's query keys
    source = f"transport URL {redact(url)}"
    for key, raw in pairs:
        if key in target.client_options:
            _check_client_value(target, key, raw, source)
            kept[key] = raw
        else:
            kwargs[key] = _coerce(key, raw, _url_types(key, parameters, target, source), source)
    for key, value in options.items():
        if key in target.client_options:
            _check_client_value(target, key, str(value), "TRANSPORT_OPTIONS")
            kept[key] = str(value)
        elif key in parameters:
            kwargs[key] = _option(key, value, parameters[key])
        else:
            raise _unknown(key, "TRANSPORT_OPTIONS", parameters, target)
    if target.url_argument is not None:
        base = url.split("?", 1)[0]
        kwargs[target.url_argument] = f"{base}?{urlencode(kept)}" if kept else base
    return target.build(**kwargs)


def redact(url: str) -> str:
    """The URL with its password (and password-like query values) replaced by ***.

    >>> redact("redis://:secret@host:6379/0")
    'redis://:***@host:6379/0'
    """
    parts = urlsplit(url)
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        # Without a colon the userinfo may be a bare password (redis://secret@host).
        hidden = f"{user}:***@{host}" if colon else f"***@{host}"
        url = url.replace(parts.netloc, hidden, 1)
    return _SECRET_KEY.sub(r"\1\2=***", url)


def _target(url: str, parts: SplitResult, query_keys: set[str]) -> _Target:
    scheme = parts.scheme.lower()
    if scheme == "memory":
        from taskorbit.transports.memory import MemoryTransport

        return _Target(MemoryTransport)
    if scheme in ("redis", "rediss", "unix"):
        from taskorbit.transports.redis_streams import RedisStreamsTransport

        names, parsers = _redis_client_options(scheme)
        tls_only = _redis_client_options("rediss")[0] - names
        return _Target(
            RedisStreamsTransport,
            url_argument="url",
            taken=frozenset({"client"}),
            client_options=names,
            client_parsers=parsers,
            client_library="redis-py",
            client_elsewhere=dict.fromkeys(tls_only, "is a TLS option: use a rediss:// URL"),
        )
    if scheme == "sqs":
        from taskorbit.transports.sqs import SQSTransport

        given = {"queue_name": parts.netloc + parts.path}
        return _Target(SQSTransport, given=given, taken=frozenset({"queue_url"}))
    if scheme in ("http", "https") and ("sqs" in parts.netloc or "queue" in query_keys):
        from taskorbit.transports.sqs import SQSTransport

        return _Target(SQSTransport, url_argument="queue_url", taken=frozenset({"queue_name"}))
    if scheme == "pubsub":
        from taskorbit.transports.pubsub import PubSubTransport

        return _Target(PubSubTransport, given={"subscription": (parts.netloc + parts.path) or None})
    raise ConfigurationError(
        f"unknown transport URL {redact(url)!r}; use memory://, redis://, sqs://NAME, an SQS "
        "queue URL, or pubsub://projects/P/subscriptions/S?topic=T"
    )


def _parameters(target: _Target) -> dict[str, inspect.Parameter]:
    """The constructor's keyword arguments that options may set."""
    excluded = {*target.given, *target.taken, target.url_argument}
    return {
        name: p
        for name, p in inspect.signature(target.build).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in excluded
    }


def _url_types(
    key: str, parameters: Mapping[str, inspect.Parameter], target: _Target, source: str
) -> tuple[type | None, ...]:
    """The types a query key's value may take; raises for keys a URL cannot set."""
    if key in target.client_elsewhere:
        raise ConfigurationError(f"option {key!r} in {source} {target.client_elsewhere[key]}")
    if key not in parameters:
        raise _unknown(key, source, parameters, target)
    types_ = _scalar_types(parameters[key].annotation)
    if types_ is None:
        raise ConfigurationError(
            f"option {key!r} in {source} takes a Python object, not text; "
            f"pass it in TRANSPORT_OPTIONS (transport_from_url(url, {key}=...))"
        )
    return types_


def _unknown(
    key: str, source: str, parameters: Mapping[str, inspect.Parameter], target: _Target
) -> ConfigurationError:
    from_url = source != "TRANSPORT_OPTIONS"
    valid = sorted(
        name
        for name, p in parameters.items()
        if not from_url or _scalar_types(p.annotation) is not None
    )
    name = getattr(target.build, "__name__", "the transport")
    lists = [f"{name}'s {', '.join(valid)}"] if valid else []
    if target.client_options:
        lists.append(f"{target.client_library}'s {', '.join(sorted(target.client_options))}")
    listed = f"the valid ones are {' and '.join(lists)}" if lists else f"{name} takes none"
    return ConfigurationError(f"unknown option {key!r} in {source}; {listed}")


def _scalar_types(annotation: Any) -> tuple[type | None, ...] | None:
    """``"float | None"`` → (float, None); None when not made of int/float/bool/str/None.

    Annotations are strings under ``from __future__ import annotations``, and real
    types (``typing.Optional[int]``) otherwise; both are read without evaluating.
    """
    if isinstance(annotation, str):
        text = annotation.replace(" ", "")
        optional = re.fullmatch(r"(?:typing\.)?Optional\[(.+)\]", text)
        if optional:
            text = optional.group(1) + "|None"
        names = text.split("|")
        if all(n in _SCALARS for n in names):
            return tuple(_SCALARS[n] for n in names)
        return None
    if annotation in (int, float, bool, str):
        return (annotation,)
    if annotation is None or annotation is type(None):
        return (None,)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [_scalar_types(arg) for arg in typing.get_args(annotation)]
        if all(t is not None for t in found):
            return tuple(t for ts in found if ts is not None for t in ts)
    return None


def _option(key: str, value: Any, parameter: inspect.Parameter) -> Any:
    """A TRANSPORT_OPTIONS value: as given, or converted when it is text for a non-text type."""
    types_ = _scalar_types(parameter.annotation)
    if isinstance(value, str) and types_ is not None and str not in types_:
        return _coerce(key, value, types_, "TRANSPORT_OPTIONS")
    return value


def _coerce(key: str, raw: str, types_: tuple[type | None, ...], source: str) -> Any:
    """``raw`` as the first of ``types_`` it parses as."""
    text = raw.strip()
    if None in types_ and text.lower() in ("", "none"):
        return None
    for kind in types_:
        parsed = _parse(kind, text)
        if parsed is not _INVALID:
            return parsed
    expected = " or ".join(_EXPECTED[kind] for kind in types_)
    raise ConfigurationError(f"option {key!r} in {source} must be {expected}, got {raw!r}")


def _parse(kind: type | None, text: str) -> Any:
    if kind is bool:
        lowered = text.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else _INVALID
    if kind is int or kind is float:
        try:
            return kind(text)
        except ValueError:
            return _INVALID
    if kind is str:
        return text
    return _INVALID


def _redis_client_options(scheme: str) -> tuple[frozenset[str], Mapping[str, Callable[[str], Any]]]:
    """The query keys redis-py reads from this scheme's URL, and its converters.

    Asked of redis-py itself, so that the list follows the installed version: the
    keyword arguments of the scheme's connection class (rediss:// adds the ssl_*
    ones) and of its pool that redis-py converts from text, or that take text.
    """
    from redis import connection

    parsers: Mapping[str, Callable[[str], Any]] = getattr(
        connection, "URL_QUERY_ARGUMENT_PARSERS", {}
    )
    klass = {
        "rediss": connection.SSLConnection,
        "unix": connection.UnixDomainSocketConnection,
    }.get(scheme, connection.Connection)
    names: set[str] = set()
    for owner in (*klass.__mro__, connection.ConnectionPool):
        init = vars(owner).get("__init__")
        if init is not None:
            names.update(
                p.name for p in _keyword_parameters(init) if p.name in parsers or _takes_text(p)
            )
    # orig_* are redis-py's own bookkeeping of the values it was first given.
    return frozenset(
        n for n in names if n not in _REDIS_NOT_FROM_URL and not n.startswith("orig_")
    ), parsers


def _keyword_parameters(function: Callable[..., Any]) -> Iterable[inspect.Parameter]:
    for p in inspect.signature(function).parameters.values():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
            yield p


def _takes_text(p: inspect.Parameter) -> bool:
    if p.annotation is inspect.Parameter.empty:
        return p.default is None or isinstance(p.default, str)
    types_ = _scalar_types(p.annotation)
    return types_ is not None and str in types_ and set(types_) <= {str, None}


def _check_client_value(target: _Target, key: str, raw: str, source: str) -> None:
    """Convert a client-library value the way the library will, to fail here."""
    parser = target.client_parsers.get(key)
    if parser is None or raw == "":
        return
    try:
        parser(raw)
    except (TypeError, ValueError):
        kind = getattr(parser, "__name__", "")
        expected = {"int": "an integer", "float": "a number", "to_bool": "true or false"}.get(
            kind, f"a value {target.client_library} accepts"
        )
        raise ConfigurationError(
            f"option {key!r} in {source} must be {expected}, got {raw!r}"
        ) from None


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
