"""Idempotency stores: run each idempotency key once, even when a message is
delivered twice.

``base`` holds the protocol every store follows (an atomic claim per batch:
new / in progress / done); ``memory`` is the process-local store; ``redis`` shares
claims between workers through a Redis server (reached through
``taskorbit.transports.redis.client``, so that only that folder imports redis-py).
Imported by the worker's dispatcher and settler and by users' code.
"""

from taskorbit.idempotency.base import ClaimState, IdempotencyStore
from taskorbit.idempotency.memory import MemoryStore

__all__ = ["ClaimState", "IdempotencyStore", "MemoryStore"]
