"""Retry policies and exponential backoff (taskorbit.retry)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from taskorbit.errors import ConfigurationError
from taskorbit.retry import DEFAULT_RETRY_POLICY, ExponentialBackoff, RetryPolicy


def test_default_policy_is_ten_retries_from_one_second_capped_at_five_minutes() -> None:
    expected = ExponentialBackoff(max_retries=10, base_delay=1.0, max_delay=300.0, jitter=0.1)
    assert expected == DEFAULT_RETRY_POLICY


def test_delays_double_per_attempt_until_the_cap() -> None:
    policy = ExponentialBackoff(jitter=0)
    delays = [policy.delay(attempt) for attempt in range(1, 12)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_base_delay_scales_every_step() -> None:
    policy = ExponentialBackoff(base_delay=0.5, max_delay=3.0, jitter=0)
    assert [policy.delay(a) for a in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_max_retries_ten_allows_eleven_runs_in_all() -> None:
    policy = ExponentialBackoff(max_retries=10)
    runs = 1
    while policy.should_retry(runs):
        runs += 1
    assert runs == 11
    assert policy.should_retry(10) is True
    assert policy.should_retry(11) is False


def test_zero_max_retries_never_retries() -> None:
    assert ExponentialBackoff(max_retries=0).should_retry(1) is False


def test_jittered_delays_stay_within_the_jitter_band_and_under_the_cap() -> None:
    policy = ExponentialBackoff(jitter=0.1)
    rng = random.Random(1234)
    for attempt in range(1, 15):
        exact = min(2.0 ** (attempt - 1), 300.0)
        for _ in range(200):
            delay = policy.delay(attempt, rng)
            assert exact * 0.9 <= delay <= min(exact * 1.1, 300.0)


def test_jitter_spreads_retries_of_messages_that_failed_together() -> None:
    policy = ExponentialBackoff(jitter=0.1)
    rng = random.Random(7)
    delays = {policy.delay(3, rng) for _ in range(50)}
    assert len(delays) == 50  # no two of the 50 come back at the same moment


def test_the_same_seed_gives_the_same_delays() -> None:
    policy = ExponentialBackoff(jitter=0.5)
    first = [policy.delay(a, random.Random(99)) for a in range(1, 8)]
    second = [policy.delay(a, random.Random(99)) for a in range(1, 8)]
    assert first == second


def test_delay_without_an_rng_uses_a_shared_one() -> None:
    delay = ExponentialBackoff(jitter=0.2).delay(2)
    assert 1.6 <= delay <= 2.4


@pytest.mark.parametrize("attempt", [1024, 1025, 10**6, 10**100])
def test_huge_attempt_numbers_give_the_cap_without_overflow(attempt: int) -> None:
    assert ExponentialBackoff(jitter=0).delay(attempt) == 300.0
    # With jitter: the same jittered cap as the first capped attempt, for the same draw.
    jittered = ExponentialBackoff(jitter=0.3)
    capped = jittered.delay(10, random.Random(1))
    assert 210.0 <= capped <= 300.0
    assert jittered.delay(attempt, random.Random(1)) == capped


def test_a_huge_base_delay_is_capped_without_overflow() -> None:
    policy = ExponentialBackoff(base_delay=1e300, max_delay=1e308, jitter=0)
    assert policy.delay(2000) == 1e308


def test_zero_base_delay_retries_immediately() -> None:
    policy = ExponentialBackoff(base_delay=0.0, jitter=0.5)
    assert [policy.delay(a) for a in (1, 5, 50)] == [0.0, 0.0, 0.0]


def test_attempts_are_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="numbered from 1"):
        ExponentialBackoff().delay(0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": -1}, "max_retries must be >= 0"),
        ({"max_retries": 2.5}, "max_retries must be a whole number"),
        ({"max_retries": True}, "max_retries must be a whole number"),
        ({"base_delay": -1.0}, "base_delay must be a finite number of seconds >= 0"),
        ({"base_delay": float("nan")}, "base_delay must be a finite"),
        ({"max_delay": float("inf")}, "max_delay must be a finite"),
        ({"base_delay": "1"}, "base_delay must be a number of seconds"),
        ({"base_delay": 10.0, "max_delay": 5.0}, "must not exceed max_delay"),
        ({"jitter": 1.5}, "jitter must be between 0 and 1"),
        ({"jitter": -0.1}, "jitter must be between 0 and 1"),
    ],
)
def test_bad_settings_are_refused_with_a_helpful_message(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ExponentialBackoff(**kwargs)  # type: ignore[arg-type]


def test_per_task_overrides_derive_from_the_default_policy() -> None:
    policy = dataclasses.replace(DEFAULT_RETRY_POLICY, max_retries=3, base_delay=0.25)
    assert policy.should_retry(3) and not policy.should_retry(4)
    assert ExponentialBackoff(**{**dataclasses.asdict(policy), "jitter": 0}).delay(3) == 1.0


def test_any_object_with_the_three_members_is_a_retry_policy() -> None:
    @dataclasses.dataclass
    class FixedDelay:
        max_retries: int = 3
        seconds: float = 5.0

        def should_retry(self, attempt: int) -> bool:
            return attempt <= self.max_retries

        def delay(self, attempt: int, rng: random.Random | None = None) -> float:
            return self.seconds

    assert isinstance(FixedDelay(), RetryPolicy)
    assert isinstance(DEFAULT_RETRY_POLICY, RetryPolicy)
    assert not isinstance(object(), RetryPolicy)
