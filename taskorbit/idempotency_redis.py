"""The import path users write for :class:`RedisStore`; the code lives in
:mod:`taskorbit.idempotency.redis`."""

from taskorbit.idempotency.redis import RedisStore

__all__ = ["RedisStore"]
