"""The idempotency claim protocol and the in-memory store (taskorbit.idempotency)."""

from __future__ import annotations

import threading

import pytest

from taskorbit.errors import ConfigurationError
from taskorbit.idempotency import ClaimState, IdempotencyStore, MemoryStore

NEW, IN_PROGRESS, DONE = ClaimState.NEW, ClaimState.IN_PROGRESS, ClaimState.DONE


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)


def test_memory_store_implements_the_store_protocol(store: MemoryStore) -> None:
    assert isinstance(store, IdempotencyStore)


def test_a_key_goes_from_new_to_in_progress_to_done(store: MemoryStore) -> None:
    assert store.claim_many(["order-42"], ttl_s=60) == [NEW]
    assert store.claim_many(["order-42"], ttl_s=60) == [IN_PROGRESS]
    store.complete("order-42", ttl_s=3600)
    assert store.claim_many(["order-42"], ttl_s=60) == [DONE]


def test_a_batch_answers_one_state_per_key_in_order(store: MemoryStore) -> None:
    store.claim_many(["running"], ttl_s=60)
    store.complete("finished", ttl_s=60)
    assert store.claim_many(["fresh", "running", "finished"], ttl_s=60) == [NEW, IN_PROGRESS, DONE]


def test_a_key_repeated_within_one_batch_is_new_only_the_first_time(store: MemoryStore) -> None:
    assert store.claim_many(["k", "other", "k", "k"], ttl_s=60) == [
        NEW,
        NEW,
        IN_PROGRESS,
        IN_PROGRESS,
    ]


def test_release_lets_a_retry_claim_the_key_again(store: MemoryStore) -> None:
    store.claim_many(["k"], ttl_s=60)
    store.release("k")
    assert store.claim_many(["k"], ttl_s=60) == [NEW]


def test_release_never_removes_a_done_mark(store: MemoryStore) -> None:
    store.claim_many(["k"], ttl_s=60)
    store.complete("k", ttl_s=60)
    store.release("k")
    assert store.claim_many(["k"], ttl_s=60) == [DONE]


def test_releasing_an_unknown_key_does_nothing(store: MemoryStore) -> None:
    store.release("never-claimed")
    assert len(store) == 0


def test_a_crashed_workers_claim_frees_itself_after_its_ttl(
    store: MemoryStore, clock: FakeClock
) -> None:
    store.claim_many(["k"], ttl_s=30)
    clock.now += 29.9
    assert store.claim_many(["k"], ttl_s=30) == [IN_PROGRESS]
    clock.now += 0.1
    assert store.claim_many(["k"], ttl_s=30) == [NEW]


def test_a_done_mark_is_remembered_for_its_own_ttl(store: MemoryStore, clock: FakeClock) -> None:
    store.claim_many(["k"], ttl_s=30)
    store.complete("k", ttl_s=3600)
    clock.now += 3599
    assert store.claim_many(["k"], ttl_s=30) == [DONE]
    clock.now += 1
    assert store.claim_many(["k"], ttl_s=30) == [NEW]


def test_the_oldest_keys_are_forgotten_beyond_max_keys(clock: FakeClock) -> None:
    store = MemoryStore(max_keys=3, clock=clock)
    store.claim_many(["a", "b", "c"], ttl_s=60)
    store.complete("a", ttl_s=60)  # rewriting "a" makes "b" the oldest
    store.claim_many(["d"], ttl_s=60)
    assert len(store) == 3
    assert store.claim_many(["a", "c", "d"], ttl_s=60) == [DONE, IN_PROGRESS, IN_PROGRESS]
    assert store.claim_many(["b"], ttl_s=60) == [NEW]  # evicted, so it may run again


def test_expired_keys_make_room_before_live_ones_are_evicted(clock: FakeClock) -> None:
    store = MemoryStore(max_keys=2, clock=clock)
    store.complete("old-but-live", ttl_s=3600)
    store.claim_many(["young-but-expiring"], ttl_s=1)
    clock.now += 2
    store.claim_many(["new"], ttl_s=60)
    assert store.claim_many(["old-but-live"], ttl_s=60) == [DONE]


def test_many_rewrites_of_few_keys_keep_memory_bounded(clock: FakeClock) -> None:
    store = MemoryStore(max_keys=10, clock=clock)
    for i in range(20_000):
        key = f"k{i % 5}"
        store.claim_many([key], ttl_s=60)
        store.complete(key, ttl_s=60)
        clock.now += 0.001
    assert len(store) == 5
    assert len(store._expiry) < 2 * 5 + 1024 + 2  # stale expiry records are compacted


def test_len_counts_only_live_keys(store: MemoryStore, clock: FakeClock) -> None:
    store.claim_many(["a", "b"], ttl_s=10)
    store.complete("c", ttl_s=100)
    assert len(store) == 3
    clock.now += 50
    assert len(store) == 1


def test_concurrent_claims_of_the_same_keys_give_exactly_one_new_per_key() -> None:
    store = MemoryStore()
    keys = [f"key-{i}" for i in range(200)]
    results: list[list[ClaimState]] = []
    barrier = threading.Barrier(8)

    def claimer() -> None:
        barrier.wait()
        results.append(store.claim_many(keys, ttl_s=60))

    threads = [threading.Thread(target=claimer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(len(keys)):
        states = [result[index] for result in results]
        assert states.count(NEW) == 1
        assert states.count(IN_PROGRESS) == 7


@pytest.mark.parametrize("ttl_s", [0, -1, float("nan"), float("inf")])
def test_a_ttl_that_is_not_a_positive_number_of_seconds_is_refused(
    store: MemoryStore, ttl_s: float
) -> None:
    with pytest.raises(ConfigurationError, match="ttl_s must be"):
        store.claim_many(["k"], ttl_s=ttl_s)
    with pytest.raises(ConfigurationError, match="ttl_s must be"):
        store.complete("k", ttl_s=ttl_s)


@pytest.mark.parametrize("max_keys", [0, -5, 1.5, True])
def test_max_keys_must_be_a_positive_whole_number(max_keys: int) -> None:
    with pytest.raises(ConfigurationError, match="max_keys must be"):
        MemoryStore(max_keys=max_keys)
