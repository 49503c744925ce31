"""Idempotency stores: run each idempotency key once, even when a message is
delivered twice.

Before a batch of messages runs, the dispatcher claims their keys in one atomic
call (:meth:`IdempotencyStore.claim_many`). Each key is in one of three states:

- absent: the claim marks it in progress and answers :attr:`ClaimState.NEW`; the
  message runs. The mark expires after ``ttl_s``, so the claim of a worker that
  crashed mid-handler frees itself and a redelivery can run.
- in progress (:attr:`ClaimState.IN_PROGRESS`): another delivery is running it
  right now. The duplicate is put back with a delay, never acked: if the first run
  fails, the duplicate is what still carries the work.
- done (:attr:`ClaimState.DONE`): it already succeeded; the duplicate is acked.

After the handler succeeds, :meth:`~IdempotencyStore.complete` marks the key done
(remembered for ``ttl_s``); after it fails, :meth:`~IdempotencyStore.release` drops
the claim so that a retry can claim it again.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from taskorbit.errors import ConfigurationError


class ClaimState(enum.Enum):
    """What a claim found for one key."""

    NEW = "new"  # nobody had it: it is now in progress for the caller
    IN_PROGRESS = "in_progress"  # someone else is running it
    DONE = "done"  # it already completed


@runtime_checkable
class IdempotencyStore(Protocol):
    """Where idempotency keys live. Implementations must be thread-safe."""

    def claim_many(self, keys: Sequence[str], ttl_s: float) -> list[ClaimState]:
        """Claim ``keys`` in one atomic round trip; one state per key, in order.

        An absent key becomes in progress for ``ttl_s`` seconds and answers NEW.
        A key repeated within one call answers NEW first, IN_PROGRESS after.
        """
        ...

    def complete(self, key: str, ttl_s: float) -> None:
        """Mark ``key`` done and remember it for ``ttl_s`` seconds."""
        ...

    def release(self, key: str) -> None:
        """Drop an in-progress claim (the handler failed). Never removes a done mark."""
        ...


def check_ttl(ttl_s: float) -> None:
    if not (isinstance(ttl_s, (int, float)) and math.isfinite(ttl_s) and ttl_s > 0):
        raise ConfigurationError(f"ttl_s must be a number of seconds > 0, got {ttl_s!r}")
