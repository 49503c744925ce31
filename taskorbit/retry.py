"""Retry policies: whether a failed attempt runs again, and after how long.

Attempts are numbered from 1: attempt 1 is the first run. After attempt ``a``
fails, the worker asks ``policy.should_retry(a)``; if yes, the message runs again
``policy.delay(a)`` seconds later as attempt ``a + 1``. With ``max_retries=10``
there are at most 11 runs; a failure of attempt 11 dead-letters the message.

Any object with ``max_retries``, ``should_retry()`` and ``delay()`` is a policy,
so a task can bring its own (fixed delays, a schedule read from settings, ...).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from taskorbit.errors import ConfigurationError

# 2.0 ** 1023 is the largest power of two a float holds; beyond it the doubling
# would raise OverflowError, and the delay is capped long before anyway.
_MAX_EXPONENT = 1023


@runtime_checkable
class RetryPolicy(Protocol):
    """Decides retries for one task. Implementations must be thread-safe."""

    @property
    def max_retries(self) -> int:
        """How many times a failed message runs again before it is dead-lettered."""
        ...

    def should_retry(self, attempt: int) -> bool:
        """Whether to run again after the 1-based ``attempt`` failed."""
        ...

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the run that follows the failed ``attempt``."""
        ...


@dataclass(frozen=True)
class ExponentialBackoff:
    """Doubling delays with a cap and proportional jitter.

    ``delay(a) = min(base_delay * 2**(a-1), max_delay)``, then multiplied by a
    factor drawn uniformly from ``[1 - jitter, 1 + jitter]`` and capped at
    ``max_delay`` again. With the defaults (1 s base, 300 s cap, jitter 0.1):

    =======  =============  =================
    attempt  before jitter  with jitter 0.1
    =======  =============  =================
    1        1 s            0.9 to 1.1 s
    2        2 s            1.8 to 2.2 s
    3        4 s            3.6 to 4.4 s
    4        8 s            7.2 to 8.8 s
    5        16 s           14.4 to 17.6 s
    9        256 s          230.4 to 281.6 s
    10+      300 s (cap)    270 to 300 s
    =======  =============  =================

    Jitter spreads the retries of messages that failed together (a broker outage)
    so they do not come back as one burst. ``jitter=0`` gives exact delays.
    """

    max_retries: int = 10
    base_delay: float = 1.0
    max_delay: float = 300.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise ConfigurationError(
                f"max_retries must be a whole number, got {self.max_retries!r}"
            )
        if self.max_retries < 0:
            raise ConfigurationError(
                f"max_retries must be >= 0 (0 means never retry), got {self.max_retries}"
            )
        _check_seconds("base_delay", self.base_delay)
        _check_seconds("max_delay", self.max_delay)
        if self.base_delay > self.max_delay:
            raise ConfigurationError(
                f"base_delay ({self.base_delay} s) must not exceed max_delay "
                f"({self.max_delay} s); raise max_delay or lower base_delay"
            )
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigurationError(
                f"jitter must be between 0 and 1 (a fraction of the delay), got {self.jitter!r}"
            )

    def should_retry(self, attempt: int) -> bool:
        return attempt <= self.max_retries

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        if attempt < 1:
            raise ValueError(f"attempts are numbered from 1, got {attempt}")
        exponent = min(attempt - 1, _MAX_EXPONENT)
        # The product may reach inf for a huge base; min() then picks the cap.
        delay = min(self.base_delay * 2.0**exponent, self.max_delay)
        if self.jitter:
            factor = (rng or _shared_rng).uniform(1.0 - self.jitter, 1.0 + self.jitter)
            delay = min(delay * factor, self.max_delay)
        return delay


# One generator for every worker thread: uniform() is a + (b - a) * random(), and
# random() updates the Mersenne Twister state in C, atomically under the GIL.
_shared_rng = random.Random()


def _check_seconds(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


DEFAULT_RETRY_POLICY = ExponentialBackoff()
