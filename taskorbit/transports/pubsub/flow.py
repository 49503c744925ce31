"""Flow control by bytes for the Pub/Sub transport.

The runtime already bounds the count (it never asks for more messages than its ring
has room for). Pub/Sub's Pull cannot bound bytes on the server, so the transport
stops pulling while the messages it handed out and that are not yet settled hold
``max_bytes`` or more. One pull may overshoot by one batch; the next one waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable


class ByteBudget:
    """Bytes of messages handed out and not yet acked, nacked or dead-lettered."""

    def __init__(self, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        self._held: dict[str, int] = {}  # ack id -> size; guarded by self._room
        self._total = 0  # guarded by self._room
        self._room = threading.Condition()

    @property
    def held_bytes(self) -> int:
        return self._total

    def wait_for_room(self, timeout: float) -> bool:
        """True once less than ``max_bytes`` is held, False after ``timeout``."""
        if self.max_bytes is None:
            return True
        deadline = time.monotonic() + timeout
        with self._room:
            while self._total >= self.max_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._room.wait(left)
            return True

    def hold(self, sizes: Iterable[tuple[str, int]]) -> None:
        if self.max_bytes is None:
            return
        with self._room:
            for ack_id, size in sizes:
                if ack_id not in self._held:
                    self._held[ack_id] = size
                    self._total += size

    def release(self, ack_ids: Iterable[str]) -> None:
        """Forget settled messages; an id released twice (ack after nack) counts once."""
        if self.max_bytes is None:
            return
        with self._room:
            for ack_id in ack_ids:
                self._total -= self._held.pop(ack_id, 0)
            self._room.notify_all()
