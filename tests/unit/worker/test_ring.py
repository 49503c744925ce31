"""Behaviour of taskorbit.worker.ring.Ring as a user sees it, one thread at a time.

Waiting behaviour is tested with generous bounds or with events; speed lives in
benchmarks/test_ring_bench.py.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

import taskorbit.worker.ring as ring_module
from taskorbit.errors import ConfigurationError, RingClosed
from taskorbit.worker.ring import MAX_CAPACITY, Overflow, Ring, RingStats


def full_ring(capacity: int, overflow: Overflow | str = Overflow.BLOCK) -> Ring[str]:
    ring: Ring[str] = Ring(capacity, overflow=overflow)
    assert ring.put_many([f"old{i}" for i in range(ring.capacity)], timeout=0) == []
    return ring


# -- construction ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "rounded"), [(1, 1), (2, 2), (3, 4), (5, 8), (1000, 1024), (1024, 1024)]
)
def test_capacity_is_rounded_up_to_a_power_of_two(asked: int, rounded: int) -> None:
    ring: Ring[int] = Ring(asked)
    assert ring.capacity == rounded
    assert ring.free == rounded
    assert ring.stats().capacity == rounded


@pytest.mark.parametrize("capacity", [0, -1, MAX_CAPACITY + 1])
def test_a_capacity_out_of_range_is_a_configuration_error(capacity: int) -> None:
    with pytest.raises(ConfigurationError, match="capacity must be"):
        Ring(capacity)


def test_an_unknown_policy_error_lists_the_valid_policies() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Ring(4, overflow="drop_middle")
    for policy in Overflow:
        assert repr(policy.value) in str(caught.value)


@pytest.mark.parametrize(
    ("given", "policy"),
    [
        ("block", Overflow.BLOCK),
        ("DROP_NEWEST", Overflow.DROP_NEWEST),
        ("drop_oldest", Overflow.DROP_OLDEST),
        (Overflow.REJECT, Overflow.REJECT),
    ],
)
def test_policies_are_accepted_by_name_or_member(given: str, policy: Overflow) -> None:
    assert Ring(4, overflow=given).overflow is policy


@pytest.mark.parametrize("timeout", [-1, float("nan")])
def test_a_negative_or_nan_timeout_is_a_configuration_error(timeout: float) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        Ring(4).get(timeout=timeout)


def test_an_infinite_timeout_means_forever() -> None:
    ring: Ring[int] = Ring(4)
    ring.put(1, timeout=float("inf"))
    assert ring.get(timeout=float("inf")) == 1


def test_get_many_needs_at_least_one_item() -> None:
    with pytest.raises(ConfigurationError, match="max_items"):
        Ring(4).get_many(0)


# -- FIFO and stats ----------------------------------------------------------------


def test_items_come_out_in_the_order_they_went_in() -> None:
    ring: Ring[object] = Ring(8)
    marker = object()
    assert ring.put("a") == []
    assert ring.put_many([1, marker, None]) == []
    assert len(ring) == 4
    assert ring.get() == "a"
    assert ring.get_many(10) == [1, marker, None]
    assert len(ring) == 0


def test_get_many_takes_at_most_max_items() -> None:
    ring: Ring[int] = Ring(8)
    ring.put_many(range(6))  # any Sequence will do
    assert ring.get_many(4) == [0, 1, 2, 3]
    assert ring.get_many(4) == [4, 5]


def test_stats_count_every_item_and_the_high_water_mark() -> None:
    ring: Ring[int] = Ring(4)
    ring.put_many([1, 2, 3])
    ring.get_many(2)
    ring.put(4)
    assert ring.stats() == RingStats(
        enqueued=4, dequeued=2, dropped=0, rejected=0, high_water=3, length=2, capacity=4
    )


def test_free_is_capacity_minus_length() -> None:
    ring: Ring[int] = Ring(4)
    ring.put_many([1, 2, 3])
    assert ring.free == 1


def test_a_batch_that_straddles_the_array_end_comes_out_intact() -> None:
    ring: Ring[int] = Ring(4)
    ring.put_many([0, 1, 2])
    ring.get_many(3)  # positions now start at 3, so the next batch straddles the end
    assert ring.put_many([10, 11, 12, 13]) == []
    assert ring.get_many(4) == [10, 11, 12, 13]


# -- overflow policies -------------------------------------------------------------


def test_block_with_timeout_returns_what_did_not_fit_in_time() -> None:
    ring = full_ring(2)
    assert ring.put("new", timeout=0.01) == ["new"]
    assert ring.put_many(["x", "y"], timeout=0) == ["x", "y"]
    assert ring.stats().rejected == 3


def test_block_stores_as_room_appears_and_returns_the_rest_on_timeout() -> None:
    ring = full_ring(2)
    ring.get()  # one slot free: "a" fits, "b" waits and times out
    assert ring.put_many(["a", "b"], timeout=0.01) == ["b"]
    assert ring.get_many(4) == ["old1", "a"]


def test_drop_newest_hands_back_the_new_items_that_do_not_fit() -> None:
    ring = full_ring(4, Overflow.DROP_NEWEST)
    ring.get()
    assert ring.put_many(["a", "b", "c"]) == ["b", "c"]
    assert ring.put("d") == ["d"]
    assert ring.get_many(8) == ["old1", "old2", "old3", "a"]
    assert ring.stats().dropped == 3


def test_drop_oldest_evicts_and_hands_back_the_oldest_items() -> None:
    ring = full_ring(4, Overflow.DROP_OLDEST)
    assert ring.put("a") == ["old0"]
    assert ring.put_many(["b", "c"]) == ["old1", "old2"]
    assert ring.get_many(8) == ["old3", "a", "b", "c"]
    assert ring.stats().dropped == 3


def test_drop_oldest_keeps_the_newest_items_of_a_batch_larger_than_the_ring() -> None:
    ring: Ring[int] = Ring(4, overflow=Overflow.DROP_OLDEST)
    ring.put(-1)
    assert ring.put_many(list(range(6))) == [-1, 0, 1]
    assert ring.get_many(8) == [2, 3, 4, 5]


def test_reject_stores_a_batch_whole_or_not_at_all() -> None:
    ring: Ring[int] = Ring(4, overflow=Overflow.REJECT)
    ring.put_many([1, 2])
    assert ring.put_many([3, 4, 5]) == [3, 4, 5]
    assert ring.put_many([3, 4]) == []
    assert ring.put(5) == [5]
    assert ring.get_many(8) == [1, 2, 3, 4]
    assert ring.stats().rejected == 4


def test_the_policy_can_be_overridden_per_call() -> None:
    ring = full_ring(2, Overflow.BLOCK)
    assert ring.put("a", overflow=Overflow.DROP_OLDEST) == ["old0"]
    assert ring.put("b", overflow="reject") == ["b"]


def test_nothing_handed_back_stays_owned_by_the_ring() -> None:
    ring = full_ring(2, Overflow.DROP_OLDEST)
    ring.put_many(["a", "b", "c"])
    ring.drain()
    assert ring._holding() == 0 and not ring._singles and not ring._batches


# -- waiting -----------------------------------------------------------------------


def test_get_on_an_empty_ring_times_out_with_none() -> None:
    ring: Ring[int] = Ring(2)
    assert ring.get(timeout=0) is None
    assert ring.get_many(5, timeout=0.01) == []


def test_a_timed_wait_returns_after_roughly_the_timeout() -> None:
    ring: Ring[int] = Ring(2)
    started = time.monotonic()
    assert ring.get(timeout=0.05) is None
    assert 0.04 <= time.monotonic() - started < 5.0


def test_a_blocked_get_wakes_when_an_item_arrives() -> None:
    ring: Ring[str] = Ring(2)
    got: list[str | None] = []
    consumer = threading.Thread(target=lambda: got.append(ring.get(timeout=30)))
    consumer.start()
    ring.put("hello")
    consumer.join(timeout=30)
    assert got == ["hello"]


def test_a_blocked_put_completes_when_a_consumer_makes_room() -> None:
    ring = full_ring(1)
    result: list[list[str]] = []
    producer = threading.Thread(target=lambda: result.append(ring.put("new", timeout=30)))
    producer.start()
    assert ring.get(timeout=30) == "old0"
    producer.join(timeout=30)
    assert result == [[]]
    assert ring.get(timeout=0) == "new"


def test_wait_not_full_reports_room_or_timeout() -> None:
    ring = full_ring(2)
    assert ring.wait_not_full(timeout=0.01) is False
    ring.get()
    assert ring.wait_not_full(timeout=0) is True


# -- closing -----------------------------------------------------------------------


def test_put_on_a_closed_ring_raises_ring_closed() -> None:
    ring: Ring[int] = Ring(2)
    ring.close()
    assert ring.closed
    with pytest.raises(RingClosed):
        ring.put(1)
    with pytest.raises(RingClosed):
        ring.put_many([1, 2])
    assert ring._holding() == 0 and not ring._singles and not ring._batches


@pytest.mark.parametrize("policy", list(Overflow))
def test_a_put_on_a_closed_ring_keeps_no_reference_to_its_items(policy: Overflow) -> None:
    ring: Ring[object] = Ring(2, overflow=policy)
    ring.close()
    with pytest.raises(RingClosed):
        ring.put(object())
    with pytest.raises(RingClosed):
        ring.put_many([object(), object()])
    assert not ring._singles and not ring._batches


def test_get_after_close_drains_what_is_left_then_returns_empty() -> None:
    ring: Ring[int] = Ring(4)
    ring.put_many([1, 2, 3])
    ring.close()
    assert ring.get() == 1
    assert ring.get_many(10) == [2, 3]
    assert ring.get_many(10) == []  # no wait: closed and empty
    assert ring.get() is None


def test_close_is_idempotent_and_wait_not_full_is_false_after_it() -> None:
    ring: Ring[int] = Ring(2)
    ring.close()
    ring.close()
    assert ring.wait_not_full() is False


def test_close_wakes_a_consumer_waiting_forever() -> None:
    ring: Ring[int] = Ring(2)
    got: list[list[int]] = []
    consumer = threading.Thread(target=lambda: got.append(ring.get_many(4)))
    consumer.start()
    ring.close()
    consumer.join(timeout=30)
    assert not consumer.is_alive()
    assert got == [[]]


def test_close_wakes_a_producer_waiting_forever_with_ring_closed() -> None:
    ring = full_ring(1)
    outcome: list[object] = []

    def produce() -> None:
        try:
            outcome.append(ring.put_many(["a", "b"]))
        except RingClosed as e:
            outcome.append(e)

    producer = threading.Thread(target=produce)
    producer.start()
    ring.close()
    producer.join(timeout=30)
    assert not producer.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RingClosed)


def test_drain_takes_everything_without_waiting() -> None:
    ring: Ring[int] = Ring(8192)
    ring.put_many(list(range(5000)))
    assert ring.drain() == list(range(5000))
    assert ring.drain() == []
    assert ring._holding() == 0 and not ring._singles and not ring._batches


# -- wrap-around of the 64-bit positions -------------------------------------------


@pytest.mark.parametrize("start", [2**32 - 3, 2**64 - 3])
def test_positions_wrap_past_2_32_and_2_64_without_losing_order(start: int) -> None:
    ring: Ring[int] = Ring._starting_at(4, start)
    for base in range(0, 40, 3):
        assert ring.put_many([base, base + 1, base + 2]) == []
        assert ring.get_many(3) == [base, base + 1, base + 2]
    assert len(ring) == 0
    assert ring.stats().enqueued == 42


def test_repr_shows_fill_and_policy() -> None:
    ring: Ring[int] = Ring(4, overflow="reject")
    ring.put(1)
    assert repr(ring) == "<Ring 1/4 overflow=reject>"


def test_a_producer_woken_by_close_stores_nothing_even_if_room_appears() -> None:
    ring = full_ring(1)
    outcome: list[object] = []
    waiting = threading.Event()

    def produce() -> None:
        waiting.set()
        try:
            outcome.append(ring.put("late"))
        except RingClosed as e:
            outcome.append(e)

    producer = threading.Thread(target=produce)
    producer.start()
    waiting.wait(timeout=30)
    ring.close()
    assert ring.get_many(4) == ["old0"]  # room appears right after the close
    producer.join(timeout=30)
    assert isinstance(outcome[0], RingClosed)
    assert len(ring) == 0
    assert ring._holding() == 0 and not ring._singles and not ring._batches


# -- ownership of the Python objects -----------------------------------------------


class Payload:
    """A weak-referenceable stand-in for a message."""


def test_an_item_taken_from_a_batch_is_released_before_the_rest_of_its_batch() -> None:
    ring: Ring[Payload] = Ring(4)
    first, second = Payload(), Payload()
    ring.put_many([first, second])
    gone = weakref.ref(first)
    del first
    assert len(ring.get_many(1)) == 1  # the taken item is dropped at once by the caller
    gc.collect()
    assert gone() is None  # the ring no longer holds it, though `second` is still inside
    assert ring.get() is second


def test_a_number_still_in_use_after_a_wrap_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    ring: Ring[str] = Ring(8)
    monkeypatch.setattr(ring, "_numbers", iter([7, 7, 8, 3, 3, 4]))  # as if numbers wrapped
    ring.put("a")
    ring.put("b")  # 7 is taken by "a": gets 8
    ring.put_many(["c", "d"])
    ring.put_many(["e"])  # 3 is taken by ["c", "d"]: gets 4
    assert ring.get_many(8) == ["a", "b", "c", "d", "e"]
    assert ring._holding() == 0


def test_a_batch_larger_than_a_token_batch_goes_in_several_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ring_module, "_MAX_BATCH", 3)
    ring: Ring[int] = Ring(8, overflow=Overflow.DROP_NEWEST)
    assert ring.put_many(list(range(10))) == [8, 9]
    assert ring.get_many(8) == list(range(8))
    assert ring._holding() == 0
