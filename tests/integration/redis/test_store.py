"""The Redis idempotency store: atomic claims across threads and processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskorbit.errors import ConfigurationError
from taskorbit.idempotency import ClaimState, IdempotencyStore
from taskorbit.idempotency.redis import RedisStore
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

NEW, IN_PROGRESS, DONE = ClaimState.NEW, ClaimState.IN_PROGRESS, ClaimState.DONE
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(url=redis_url, prefix="test:idem:")
    yield store
    store.close()


def test_the_store_implements_the_idempotency_store_protocol(store: RedisStore) -> None:
    assert isinstance(store, IdempotencyStore)


def test_a_key_is_new_then_in_progress_then_done(store: RedisStore) -> None:
    assert store.claim_many(["a"], ttl_s=60) == [NEW]
    assert store.claim_many(["a"], ttl_s=60) == [IN_PROGRESS]
    store.complete("a", ttl_s=60)
    assert store.claim_many(["a", "b"], ttl_s=60) == [DONE, NEW]


def test_a_key_repeated_in_one_batch_is_new_only_once(store: RedisStore) -> None:
    assert store.claim_many(["k", "k", "j"], ttl_s=60) == [NEW, IN_PROGRESS, NEW]


def test_released_keys_can_be_claimed_again_but_done_marks_stay(store: RedisStore) -> None:
    store.claim_many(["failed", "ok"], ttl_s=60)
    store.complete("ok", ttl_s=60)
    store.release("failed")
    store.release("ok")
    assert store.claim_many(["failed", "ok"], ttl_s=60) == [NEW, DONE]


def test_release_leaves_another_workers_claim_alone(store: RedisStore, redis_url: str) -> None:
    other = RedisStore(url=redis_url, prefix="test:idem:")
    assert other.claim_many(["x"], ttl_s=60) == [NEW]
    store.release("x")
    assert store.claim_many(["x"], ttl_s=60) == [IN_PROGRESS]
    other.close()


def test_claims_expire_after_their_ttl(store: RedisStore) -> None:
    assert store.claim_many(["short"], ttl_s=0.2) == [NEW]
    wait_for(lambda: store.claim_many(["short"], ttl_s=0.2) == [NEW], 5.0, "the claim to expire")


def test_keys_are_stored_under_the_prefix(store: RedisStore, raw_redis: Any) -> None:
    store.claim_many(["order-42"], ttl_s=60)
    assert raw_redis.keys("*") == [b"test:idem:order-42"]
    # The ttl_s given, less the moment since the claim (a loaded machine may take a few).
    assert 55_000 <= raw_redis.pttl("test:idem:order-42") <= 60_000


def test_a_ttl_of_zero_is_refused(store: RedisStore) -> None:
    with pytest.raises(ConfigurationError, match="ttl_s"):
        store.claim_many(["a"], ttl_s=0)


def test_threads_racing_for_the_same_keys_get_each_key_new_exactly_once(
    redis_url: str,
) -> None:
    keys = [f"key-{i}" for i in range(300)]
    winners: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(8)

    def race() -> None:
        store = RedisStore(url=redis_url, prefix="race:")
        start.wait()
        for offset in range(0, len(keys), 50):
            batch = keys[offset : offset + 50]
            states = store.claim_many(batch, ttl_s=60)
            with lock:
                winners.update(k for k, s in zip(batch, states, strict=True) if s is NEW)
        store.close()

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert winners == Counter(keys)


CLAIMER = """
import json, sys
from taskorbit.idempotency import ClaimState
from taskorbit.idempotency.redis import RedisStore
store = RedisStore(url=sys.argv[1], prefix="procs:")
keys = [f"key-{i}" for i in range(2000)]
won = []
for offset in range(0, len(keys), 100):
    batch = keys[offset:offset + 100]
    won += [k for k, s in zip(batch, store.claim_many(batch, 60)) if s is ClaimState.NEW]
    for k in won[-5:]:
        store.complete(k, 60)
print(json.dumps(won))
"""


def test_two_processes_never_both_win_a_key(redis_url: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, redis_url], stdout=subprocess.PIPE, cwd=ROOT
        )
        for _ in range(2)
    ]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert not set(results[0]) & set(results[1])
    assert set(results[0]) | set(results[1]) == {f"key-{i}" for i in range(2000)}


def test_complete_in_commits_the_done_mark_with_the_callers_transaction(
    store: RedisStore, raw_redis: Any
) -> None:
    assert store.claim_many(["paid"], ttl_s=60) == [NEW]
    with store.client.pipeline(transaction=True) as tx:
        tx.incr("effect")
        store.complete_in(tx, "paid", ttl_s=60)
        assert store.claim_many(["paid"], ttl_s=60) == [IN_PROGRESS]  # not yet committed
        tx.execute()
    assert store.claim_many(["paid"], ttl_s=60) == [DONE]
    assert raw_redis.get("effect") == b"1"
