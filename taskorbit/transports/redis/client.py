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

from taskorbit.extras import needs_extra

with needs_extra("the Redis transport", "redis", "redis"):
    import redis
    from redis import connection
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.retry import Retry

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

    The first failure is a warning that names the endpoint and the cause; while the
    outage lasts the warning comes again after 10 s, 20 s, 40 s ... (then every
    5 min), with failures in between at debug level; the return is logged at info.
    An outage of minutes thus writes a handful of lines, not thousands, and a wrong
    host is never silent for long. Backoff doubles from ``base_s`` up to ``cap_s``.
    """

    def __init__(
        self, what: str, endpoint: str, *, base_s: float = 0.1, cap_s: float = 5.0
    ) -> None:
        self._what = what
        self._endpoint = endpoint
        self._base_s = base_s
        self._cap_s = cap_s
        self._failures = 0
        self._down_since = 0.0
        self._next_warning = 0.0

    def failed(self, exc: BaseException, budget_s: float) -> None:
        """Record a failure and sleep the backoff, at most ``budget_s`` seconds."""
        now = time.monotonic()
        pause = min(self._cap_s, self._base_s * 2**self._failures)
        if self._failures == 0:
            self._down_since = now
            self._next_warning = now + _FIRST_REMINDER_S
            log.warning(
                "%s lost its Redis connection to %s (%s); reconnecting in %.1f s",
                self._what,
                self._endpoint,
                reason(exc),
                pause,
            )
        elif now >= self._next_warning:
            down_s = now - self._down_since
            self._next_warning = now + min(_MAX_REMINDER_S, down_s)
            log.warning(
                "%s still cannot reach %s after %.0f s (%s); retrying every %.1f s",
                self._what,
                self._endpoint,
                down_s,
                reason(exc),
                pause,
            )
        else:
            log.debug("%s still cannot reach %s: %s", self._what, self._endpoint, exc)
        self._failures += 1
        time.sleep(max(0.0, min(pause, budget_s)))

    def succeeded(self) -> None:
        if self._failures:
            log.info(
                "%s reconnected to Redis at %s after %.1f s",
                self._what,
                self._endpoint,
                time.monotonic() - self._down_since,
            )
            self._failures = 0


# An outage is reported again after this long, then after twice as long as it has
# lasted, at most this far apart.
_FIRST_REMINDER_S = 10.0
_MAX_REMINDER_S = 300.0


def endpoint(client: redis.Redis) -> str:
    """The server ``client`` talks to, as a URL without its password.

    >>> endpoint(redis.Redis.from_url("redis://:secret@cache:6380/2"))
    'redis://:***@cache:6380/2'
    """
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    user = kwargs.get("username") or ""
    # Only a password is secret; the user name helps tell two setups apart.
    auth = f"{user}:***@" if kwargs.get("password") else (f"{user}@" if user else "")
    db = kwargs.get("db", 0)
    if issubclass(pool.connection_class, connection.UnixDomainSocketConnection):
        return f"unix://{auth}{kwargs.get('path', '')}?db={db}"
    scheme = "rediss" if issubclass(pool.connection_class, connection.SSLConnection) else "redis"
    host = str(kwargs.get("host", "localhost"))
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"{scheme}://{auth}{host}:{kwargs.get('port', 6379)}/{db}"


def ping(client: redis.Redis, timeout: float) -> None:
    """PING the server on a connection of its own, within ``timeout`` seconds.

    A fresh connection with the pool's settings (TLS, AUTH, SELECT all happen) but
    this timeout and no retry: the pool's own connections retry and wait up to their
    socket timeouts, which suits a running worker, not a check at start. Raises
    TransportConnectionError: ``cannot connect to redis://host:6379/0 (Connection
    refused)``.
    """
    pool = client.connection_pool
    timeout = max(0.1, timeout)
    options = {
        **pool.connection_kwargs,
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    conn = pool.connection_class(**options)
    try:
        conn.connect()
        conn.send_command("PING")
        conn.read_response()
    except redis.RedisError as exc:
        raise TransportConnectionError(
            f"cannot connect to {endpoint(client)} ({reason(exc)})"
        ) from exc
    finally:
        conn.disconnect()


def reason(exc: BaseException) -> str:
    """Why a connection failed, in the operating system's words when it said so:
    ``Connection refused``, ``Name or service not known``, ``timed out``; else the
    client library's own message."""
    seen: BaseException | None = exc
    for _ in range(6):  # TransportConnectionError -> redis error -> OSError
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.strerror:
            return str(seen.strerror)
        if isinstance(seen, (TimeoutError, redis.TimeoutError)):
            return "timed out"
        seen = seen.__cause__ or seen.__context__
    innermost = exc.__cause__ or exc
    return str(innermost).rstrip(".") or type(innermost).__name__


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
