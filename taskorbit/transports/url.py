"""Building a transport from a URL: ``redis://host/0?stream=jobs&lease_s=60``.

A URL's query values are text, while the transports want numbers, flags and None:
each value is converted to the type the constructor's annotation names, so that
``?lease_s=60`` is 60.0 and ``?delete_acked=false`` is False rather than a truthy
string. Keys that belong to the client library (redis-py's ``?ssl_cert_reqs=none``)
stay in the URL the client is built from. Anything else is a typo and stops the app
at start, naming the valid keys; no message shows the URL's password.

Which broker a scheme means is the one table here (:data:`SCHEMES`); how a URL maps
onto that broker's transport is the broker's own ``url_target`` (in its package),
so adding a broker adds its folder and one line to the table.
"""

from __future__ import annotations

import importlib
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

from taskorbit.errors import ConfigurationError
from taskorbit.transports.base import Transport

#: URL scheme -> the broker package under taskorbit.transports that builds it.
SCHEMES = {
    "memory": "memory",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "sqs": "sqs",
    "http": "sqs",  # an SQS queue URL (its url_target checks the host)
    "https": "sqs",
    "pubsub": "pubsub",
    "kafka": "kafka",
}

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
_SECRET_KEY = re.compile(r"(^|[?&])([^=&#]*(?:password|secret|token)[^=&#]*)=[^&#]*", re.I)


@dataclass(frozen=True)
class UrlTarget:
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


def _target(url: str, parts: SplitResult, query_keys: set[str]) -> UrlTarget:
    broker = SCHEMES.get(parts.scheme.lower())
    if broker is not None:
        module = importlib.import_module(f"taskorbit.transports.{broker}")
        found: UrlTarget | None = module.url_target(parts, query_keys)
        if found is not None:
            return found
    raise ConfigurationError(
        f"unknown transport URL {redact(url)!r}; use memory://, redis://, sqs://NAME, an SQS "
        "queue URL, or pubsub://projects/P/subscriptions/S?topic=T"
    )


def _parameters(target: UrlTarget) -> dict[str, inspect.Parameter]:
    """The constructor's keyword arguments that options may set."""
    excluded = {*target.given, *target.taken, target.url_argument}
    return {
        name: p
        for name, p in inspect.signature(target.build).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in excluded
    }


def _url_types(
    key: str, parameters: Mapping[str, inspect.Parameter], target: UrlTarget, source: str
) -> tuple[type | None, ...]:
    """The types a query key's value may take; raises for keys a URL cannot set."""
    if key in target.client_elsewhere:
        raise ConfigurationError(f"option {key!r} in {source} {target.client_elsewhere[key]}")
    if key not in parameters:
        raise _unknown(key, source, parameters, target)
    types_ = scalar_types(parameters[key].annotation)
    if types_ is None:
        raise ConfigurationError(
            f"option {key!r} in {source} takes a Python object, not text; "
            f"pass it in TRANSPORT_OPTIONS (transport_from_url(url, {key}=...))"
        )
    return types_


def _unknown(
    key: str, source: str, parameters: Mapping[str, inspect.Parameter], target: UrlTarget
) -> ConfigurationError:
    from_url = source != "TRANSPORT_OPTIONS"
    valid = sorted(
        name
        for name, p in parameters.items()
        if not from_url or scalar_types(p.annotation) is not None
    )
    name = getattr(target.build, "__name__", "the transport")
    lists = [f"{name}'s {', '.join(valid)}"] if valid else []
    if target.client_options:
        lists.append(f"{target.client_library}'s {', '.join(sorted(target.client_options))}")
    listed = f"the valid ones are {' and '.join(lists)}" if lists else f"{name} takes none"
    return ConfigurationError(f"unknown option {key!r} in {source}; {listed}")


def scalar_types(annotation: Any) -> tuple[type | None, ...] | None:
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
        found = [scalar_types(arg) for arg in typing.get_args(annotation)]
        if all(t is not None for t in found):
            return tuple(t for ts in found if ts is not None for t in ts)
    return None


def _option(key: str, value: Any, parameter: inspect.Parameter) -> Any:
    """A TRANSPORT_OPTIONS value: as given, or converted when it is text for a non-text type."""
    types_ = scalar_types(parameter.annotation)
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


def keyword_parameters(function: Callable[..., Any]) -> Iterable[inspect.Parameter]:
    for p in inspect.signature(function).parameters.values():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
            yield p


def takes_text(p: inspect.Parameter) -> bool:
    if p.annotation is inspect.Parameter.empty:
        return p.default is None or isinstance(p.default, str)
    types_ = scalar_types(p.annotation)
    return types_ is not None and str in types_ and set(types_) <= {str, None}


def _check_client_value(target: UrlTarget, key: str, raw: str, source: str) -> None:
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


__all__ = ["SCHEMES", "UrlTarget", "redact", "transport_from_url"]
