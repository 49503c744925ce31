"""Micro benchmarks of the C ring against the stdlib queues, in one run on one machine.

    .venv/bin/python -m pytest benchmarks/test_ring_bench.py --benchmark-only

Goals (issue 2): a Ring put+get pair costs at most 1/5 of a queue.Queue pair, and
a batch of 64 through put_many+get_many costs per item at most one deque
append+popleft pair. Each ring benchmark records its ratio to the peer in
``extra_info`` (see ``--benchmark-json``) and prints it, from medians; nothing is
asserted, because a shared machine's noise would make such a test flaky. On a
loaded machine ``--benchmark-timer=time.process_time`` gives steadier numbers.
"""

from __future__ import annotations

import queue
from collections import deque
from typing import Any

import pytest

from taskorbit.worker.ring import Ring

BATCH = 64
# Peer name -> median seconds per call, filled as the peers run (they run first).
# Medians, because on a shared machine the mean is dominated by preemptions.
_medians: dict[str, float] = {}


def _record(benchmark: Any, name: str) -> float:
    median = float(benchmark.stats.stats.median)
    _medians[name] = median
    return median


@pytest.mark.benchmark(group="pair")
def test_queue_queue_put_get_pair(benchmark: Any) -> None:
    q: queue.Queue[int] = queue.Queue()

    def pair() -> None:
        q.put(1)
        q.get()

    benchmark(pair)
    _record(benchmark, "queue.Queue")


@pytest.mark.benchmark(group="pair")
def test_simple_queue_put_get_pair(benchmark: Any) -> None:
    q: queue.SimpleQueue[int] = queue.SimpleQueue()

    def pair() -> None:
        q.put(1)
        q.get()

    benchmark(pair)
    _record(benchmark, "queue.SimpleQueue")


@pytest.mark.benchmark(group="pair")
def test_deque_append_popleft_pair(benchmark: Any) -> None:
    d: deque[int] = deque()

    def pair() -> None:
        d.append(1)
        d.popleft()

    benchmark(pair)
    _record(benchmark, "deque")


@pytest.mark.benchmark(group="pair")
def test_ring_put_get_pair(benchmark: Any) -> None:
    ring: Ring[int] = Ring(1024)

    def pair() -> None:
        ring.put(1)
        ring.get()

    benchmark(pair)
    median = _record(benchmark, "Ring")
    if "queue.Queue" in _medians:
        ratio = median / _medians["queue.Queue"]
        benchmark.extra_info["ratio_to_queue_Queue"] = round(ratio, 3)
        print(f"\nRing pair / queue.Queue pair = {ratio:.3f} (goal <= 0.2)")


@pytest.mark.benchmark(group="batch-64, per call of 64 items")
def test_ring_put_many_get_many_batch_of_64(benchmark: Any) -> None:
    ring: Ring[int] = Ring(1024)
    items = list(range(BATCH))

    def batch() -> None:
        ring.put_many(items)
        ring.get_many(BATCH)

    benchmark(batch)
    per_item = float(benchmark.stats.stats.median) / BATCH
    benchmark.extra_info["per_item_ns"] = round(per_item * 1e9, 1)
    if "deque" in _medians:
        ratio = per_item / _medians["deque"]
        benchmark.extra_info["per_item_ratio_to_deque_pair"] = round(ratio, 3)
        print(f"\nRing batch-64 per item / deque pair = {ratio:.3f} (goal <= 1)")


@pytest.mark.benchmark(group="batch-64, per call of 64 items")
def test_deque_extend_and_64_poplefts(benchmark: Any) -> None:
    d: deque[int] = deque()
    items = list(range(BATCH))

    def batch() -> None:
        d.extend(items)
        for _ in range(BATCH):
            d.popleft()

    benchmark(batch)
