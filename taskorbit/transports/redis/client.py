"""Redis client handling shared by the Redis transports and the Redis store.

One place builds clients from URLs, translates redis-py's exceptions into
taskorbit's, and paces reconnects, so that nothing above ``transports/`` imports
``redis.exceptions``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

try:
    import redis
    from redis import connection
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the Redis transports need redis-py; install it with: pip install 'taskorbit[redis]'"
    ) from exc

from taskorbit.errors import ConfigurationError, TransportConnectionError, TransportError
from taskorbit.transports.url import keyword_parameters, takes_text

log = logging.getLogger("taskorbit.redis")

#: The client type, for modules outside this folder that take a client (the Redis
#: idempotency store) without importing redis-py themselves.
RedisClient = redis.Redis

# Long enough for any BLOCK the transports issue (they cap theirs below this), short
# enough that a half-open TCP connection is noticed within a poll or two.
DEFAULT_SOCKET_TIMEOUT_S = 30.0


def connect(url: str | None, client: redis.Redis | None) -> redis.Redis:
    """The client to use: the one passed in, or a new one for ``url``.

    ``url`` takes ``redis://[:password@]host:port/db``, ``rediss://`` for TLS and
    ``unix://path?db=N``; query arguments are redis-py's (``?ssl_cert_reqs=none``).
    Responses stay bytes: bodies are binary and decoding every field costs time.
    """
    if (url is None) == (client is None):
        raise ConfigurationError("pass exactly one of url='redis://...' or client=redis.Redis(...)")
    if client is not None:
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ConfigurationError(
                "the Redis client must return bytes: build it with decode_responses=False"
            )
        return client
    assert url is not None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"Redis URL must start with redis://, rediss:// or unix://, got {url!r}"
        )
    return redis.Redis.from_url(
        url,
        socket_timeout=DEFAULT_SOCKET_TIMEOUT_S,
        socket_connect_timeout=5.0,
        socket_keepalive=True,
        health_check_interval=30,
        # A dropped connection is retried twice at once with a fresh socket, so that
        # a server restart or CLIENT KILL costs one slow call instead of an error.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
    )


def max_block_s(client: redis.Redis) -> float:
    """The longest BLOCK a command may use before the socket timeout cuts it off."""
    timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if not timeout:
        return 60.0
    return max(0.05, float(timeout) * 0.8)


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise redis-py's exceptions as taskorbit's transport errors."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise TransportConnectionError(f"Redis connection failed: {exc}") from exc
    except redis.RedisError as exc:
        raise TransportError(f"Redis command failed: {exc}") from exc


def is_missing_group(exc: BaseException) -> bool:
    """True when a consumer group or its stream vanished (FLUSHALL, DEL, restart)."""
    cause = exc.__cause__ if isinstance(exc, TransportError) else exc
    return isinstance(cause, redis.ResponseError) and str(cause).startswith("NOGROUP")


def is_busy_group(exc: BaseException) -> bool:
    """True when XGROUP CREATE found the group already there (another worker won)."""
    cause = exc.__cause__ if isinstance(exc, TransportError) else exc
    return isinstance(cause, redis.ResponseError) and str(cause).startswith("BUSYGROUP")


class Reconnector:
    """Paces retries after a lost connection and says in the log what happened.

    The first failure is logged as a warning, the return as info; failures in
    between only at debug level, so an outage of minutes writes two lines, not
    thousands. Backoff doubles from ``base_s`` up to ``cap_s``.
    """

    def __init__(self, what: str, *, base_s: float = 0.1, cap_s: float = 5.0) -> None:
        self._what = what
        self._base_s = base_s
        self._cap_s = cap_s
        self._failures = 0
        self._down_since = 0.0

    def failed(self, exc: BaseException, budget_s: float) -> None:
        """Record a failure and sleep the backoff, at most ``budget_s`` seconds."""
        if self._failures == 0:
            self._down_since = time.monotonic()
            log.warning("%s lost its Redis connection (%s); reconnecting", self._what, exc)
        else:
            log.debug("%s still cannot reach Redis: %s", self._what, exc)
        pause = min(self._cap_s, self._base_s * 2**self._failures)
        self._failures += 1
        time.sleep(max(0.0, min(pause, budget_s)))

    def succeeded(self) -> None:
        if self._failures:
            log.info(
                "%s reconnected to Redis after %.1f s",
                self._what,
                time.monotonic() - self._down_since,
            )
            self._failures = 0


def as_str(value: Any) -> str:
    """A field value from a bytes-mode client as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


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


def url_query_options(scheme: str) -> tuple[frozenset[str], Mapping[str, Callable[[str], Any]]]:
    """The query keys redis-py reads from this scheme's URL, and its converters.

    Asked of redis-py itself, so that the list follows the installed version: the
    keyword arguments of the scheme's connection class (rediss:// adds the ssl_*
    ones) and of its pool that redis-py converts from text, or that take text.
    """
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
                p.name for p in keyword_parameters(init) if p.name in parsers or takes_text(p)
            )
    # orig_* are redis-py's own bookkeeping of the values it was first given.
    return frozenset(
        n for n in names if n not in _REDIS_NOT_FROM_URL and not n.startswith("orig_")
    ), parsers
