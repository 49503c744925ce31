"""The import path users write for :class:`RedisStreamsTransport`; the code lives
in :mod:`taskorbit.transports.redis.streams`."""

from taskorbit.transports.redis.streams import RedisStreamsTransport, default_consumer_name

__all__ = ["RedisStreamsTransport", "default_consumer_name"]
