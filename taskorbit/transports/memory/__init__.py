"""The in-process transport: the zero-dependency default and the test double.

``transport`` is the queue itself; ``dlq`` browses its dead letters. No client
library, no wire format.
"""

from __future__ import annotations

from urllib.parse import SplitResult

from taskorbit.transports.memory.transport import MemoryTransport
from taskorbit.transports.url import UrlTarget


def url_target(parts: SplitResult, query_keys: set[str]) -> UrlTarget:
    """``memory://``: a fresh in-process queue."""
    return UrlTarget(MemoryTransport)


__all__ = ["MemoryTransport", "url_target"]
