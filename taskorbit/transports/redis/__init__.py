"""Redis: one broker, two transports that share one client and its connection policy.

``client`` builds redis-py clients from URLs, translates redis-py's exceptions and
paces reconnects; ``streams`` is the durable Redis Streams transport (its Lua
``scripts`` and its ``dlq``); ``pubsub`` is the at-most-once broadcast transport.
This folder is the only place that imports redis-py; the Redis idempotency store
(``taskorbit.idempotency.redis``) reaches Redis through ``client``.

The public import paths ``taskorbit.transports.redis_streams`` and
``taskorbit.transports.redis_pubsub`` name the same classes.
"""

from __future__ import annotations

from urllib.parse import SplitResult

from taskorbit.extras import needs_extra
from taskorbit.transports.url import UrlTarget

with needs_extra("the Redis transport", "redis", "redis"):
    from taskorbit.transports.redis.client import url_query_options
    from taskorbit.transports.redis.pubsub import RedisPubSubTransport
    from taskorbit.transports.redis.streams import RedisStreamsTransport


def url_target(parts: SplitResult, query_keys: set[str]) -> UrlTarget:
    """How a redis://, rediss:// or unix:// URL builds a Redis Streams transport:
    the URL (with redis-py's own query keys) goes to the client."""
    names, parsers = url_query_options(parts.scheme.lower())
    tls_only = url_query_options("rediss")[0] - names
    return UrlTarget(
        RedisStreamsTransport,
        url_argument="url",
        taken=frozenset({"client"}),
        client_options=names,
        client_parsers=parsers,
        client_library="redis-py",
        client_elsewhere=dict.fromkeys(tls_only, "is a TLS option: use a rediss:// URL"),
    )


__all__ = ["RedisPubSubTransport", "RedisStreamsTransport", "url_target"]
