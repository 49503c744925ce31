"""The Redis idempotency store: claims shared by every worker on one Redis.

One string key per idempotency key (``prefix + key``):

=============  ===============================================================
absent         never seen, or its TTL ran out
``p:<owner>``  in progress, claimed by the store instance ``owner``
``d``          done
=============  ===============================================================

A whole dispatcher batch is claimed in one round trip: a Lua script does
``SET key p:<owner> NX PX ttl`` per key and reads what it could not set, so two
workers can never both get NEW for one key. ``release`` deletes a claim only while it
is still this store's own in-progress mark: if our claim expired and another worker
claimed the key since, or it completed, the key is left alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from taskorbit.errors import ConfigurationError
from taskorbit.extras import needs_extra
from taskorbit.idempotency.base import ClaimState

with needs_extra("the Redis idempotency store", "redis", "redis"):
    from taskorbit.transports.redis.client import RedisClient, connect, translated

# KEYS: the prefixed keys. ARGV: ttl ms, this store's in-progress value.
# Returns one state per key: 0 NEW, 1 IN_PROGRESS, 2 DONE.
_CLAIM_MANY = """
local states = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[2], 'NX', 'PX', ARGV[1]) then
    states[i] = 0
  elseif redis.call('GET', key) == 'd' then
    states[i] = 2
  else
    states[i] = 1
  end
end
return states
"""

# KEYS: the prefixed key. ARGV: this store's in-progress value.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_STATES = (ClaimState.NEW, ClaimState.IN_PROGRESS, ClaimState.DONE)
_DONE = b"d"


class RedisStore:
    """An :class:`~taskorbit.idempotency.IdempotencyStore` in Redis, shared by all
    workers that use the same server and ``prefix``.

    >>> store = RedisStore(url="redis://localhost:6379/0", prefix="shop:idem:")
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: RedisClient | None = None,
        prefix: str = "taskorbit:idem:",
    ) -> None:
        self.client = connect(url, client)
        self._owns_client = client is None  # a client the user passed in stays open
        self.prefix = prefix
        # Marks this instance's claims, so that release never drops someone else's.
        self._in_progress = f"p:{uuid.uuid4().hex}"
        self._claim_many = self.client.register_script(_CLAIM_MANY)
        self._release = self.client.register_script(_RELEASE)

    def claim_many(self, keys: Sequence[str], ttl_s: float) -> list[ClaimState]:
        if not keys:
            return []
        with translated():
            states = self._claim_many(
                keys=[self.prefix + k for k in keys], args=[_ttl_ms(ttl_s), self._in_progress]
            )
        return [_STATES[int(s)] for s in states]

    def complete(self, key: str, ttl_s: float) -> None:
        with translated():
            self.client.set(self.prefix + key, _DONE, px=_ttl_ms(ttl_s))

    def complete_in(self, pipeline: Any, key: str, ttl_s: float) -> None:
        """Queue the done mark of ``key`` on the caller's Redis transaction.

        The store alone cannot make a side effect happen exactly once: a worker
        killed after the effect but before :meth:`complete` leaves the claim to
        expire, and the redelivery runs the effect again. A handler whose effect
        lives in the same Redis closes that window by committing both together::

            with store.client.pipeline(transaction=True) as tx:
                tx.hincrby("stock", item, -1)
                store.complete_in(tx, ctx.attributes["IdempotencyKey"], ttl_s=86400)
                tx.execute()
        """
        pipeline.set(self.prefix + key, _DONE, px=_ttl_ms(ttl_s))

    def release(self, key: str) -> None:
        with translated():
            self._release(keys=[self.prefix + key], args=[self._in_progress])

    def keys_in_progress(self, *, mine_only: bool = True) -> list[str]:
        """Keys claimed and not yet completed or released (this instance's claims,
        or every worker's with ``mine_only=False``). Scans the keyspace: meant for
        tests and diagnostics, not for the hot path."""
        found = []
        with translated():
            for name in self.client.scan_iter(match=self.prefix + "*", count=1000):
                value: bytes | None = self.client.get(name)  # type: ignore[assignment]
                if value is None or not value.startswith(b"p:"):
                    continue
                if mine_only and value != self._in_progress.encode():
                    continue
                found.append(name.decode()[len(self.prefix) :])
        return found

    def close(self) -> None:
        if self._owns_client:
            self.client.close()


def _ttl_ms(ttl_s: float) -> int:
    if not ttl_s > 0:
        raise ConfigurationError(f"ttl_s must be greater than 0 seconds, got {ttl_s!r}")
    return max(1, int(ttl_s * 1000))


__all__ = ["RedisStore"]
