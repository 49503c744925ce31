"""The import path users write for :class:`RedisPubSubTransport`; the code lives
in :mod:`taskorbit.transports.redis.pubsub`."""

from taskorbit.transports.redis.pubsub import RedisPubSubTransport

__all__ = ["RedisPubSubTransport"]
