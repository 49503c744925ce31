"""Chaos on Redis Streams: SIGKILL workers at random moments while they hold
thousands of messages, start a fresh one after each kill, and let them finish.
Every message must be handled, its side effect (committed with the idempotency
store's done mark in one MULTI) must have happened exactly once, and nothing may
be left pending. The full profile (100 kills) is ``make chaos``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.brokers import RedisStreamsBroker
from tests.chaos.driver import Profile, markdown_table, run_chaos

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

# Handlers of 2 ms: every kill finds some running, yet 5,000 take seconds. A claim
# TTL of 2 s frees the keys of runs cut short soon after the 1 s lease.
PROFILE = Profile(
    messages=5000, kills=3, concurrency=16, buffer_size=256, handler_s=0.002,
    claim_ttl_s=2.0, timeout_s=120.0,
)  # fmt: skip


def test_killed_workers_lose_nothing_and_repeat_no_side_effect(
    redis_url: str, tmp_path: Path
) -> None:
    broker = RedisStreamsBroker(redis_url, lease_s=1.0)
    try:
        result = run_chaos(broker, redis_url, PROFILE, tmp_path)
    finally:
        broker.close()
    print(markdown_table([result]))  # shown with -s or -rP
    assert result.problems() == [], result
    assert result.kills == PROFILE.kills
    assert result.cut_runs > 0, "no kill caught a handler running: the test proved nothing"
