"""The import path users write for the ring buffer; the code lives in
:mod:`taskorbit.worker.ring`."""

from taskorbit.worker.ring import MAX_CAPACITY, Overflow, Ring, RingStats

__all__ = ["MAX_CAPACITY", "Overflow", "Ring", "RingStats"]
