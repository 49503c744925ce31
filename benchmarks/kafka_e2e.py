"""End-to-end Kafka throughput: taskorbit against the consumers a user would otherwise
write with confluent-kafka, side by side in one run on one private mock cluster.

Systems (same handler, same thread count, each a fresh consumer group reading the
same pre-loaded 6-partition topic from the start; time runs from the consumer's
start until its last handler finished, group join included for all):

- ``taskorbit``: an Orbit worker on KafkaTransport (commit safety on: the commit
  never passes an unfinished message);
- ``per-message``: a ``consume()`` loop feeding a ThreadPoolExecutor; the loop
  commits each message as its task finishes (``commit(message=m)``,
  confluent-kafka's default asynchronous commit; not commit-safe: a later offset
  may be committed while an earlier one still runs);
- ``batch``: ``consume(500)``, submit the batch, wait for all of it, then one
  synchronous ``commit()``.

Scenarios: (a) no-op handler, 100,000 messages; (b) 10 ms handlers on 64 threads
(ideal 6,400 msg/s). Repetitions are interleaved (a, b, c, a, b, c, ...) and the
medians reported. Also publishing: ``publish_many`` against a bare Producer
(``produce`` + ``flush``). ``--backpressure`` runs the long profile instead: 50,000
messages through a ring of 256 with 10 ms handlers, sampling RSS and counting
rebalances.

    .venv/bin/python benchmarks/kafka_e2e.py [--repeat 3] [--backpressure]

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, Producer

import taskorbit as orbit
from taskorbit.transports.kafka import KafkaTransport
from tests.servers import stop_process
from tests.servers.kafka import TEST_CONSUMER_CONFIG, start_kafka

TOPIC = "bench"
PARTITIONS = 6


class Finish:
    """Counts handled messages; ``done`` is set when the last one finished."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.lock = threading.Lock()
        self.done = threading.Event()

    def one(self) -> None:
        with self.lock:
            self.count += 1
            if self.count >= self.expected:
                self.done.set()


def handler(work_s: float, finish: Finish) -> Callable[[Any], None]:
    def handle(_: Any) -> None:
        if work_s:
            time.sleep(work_s)
        finish.one()

    return handle


def consumer_config(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": f"bench-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        **TEST_CONSUMER_CONFIG,
    }


def run_taskorbit(bootstrap: str, n: int, work_s: float, threads: int, ring: int = 4096) -> float:
    finish = Finish(n)
    transport = KafkaTransport(
        bootstrap,
        topic=TOPIC,
        group=f"bench-{uuid.uuid4().hex[:8]}",
        count_crashes=False,
        ordered=False,
        consumer_config=TEST_CONSUMER_CONFIG,
    )
    app = orbit.Orbit(transport, concurrency=threads, buffer_size=ring, poll_timeout=0.1)
    app.handle("bench", handler(work_s, finish), codec="raw")
    started = time.perf_counter()
    app.start()
    finish.done.wait(600)
    elapsed = time.perf_counter() - started
    app.stop(timeout=10)
    transport.close()
    return elapsed


def run_per_message(bootstrap: str, n: int, work_s: float, threads: int) -> float:
    finish = Finish(n)
    consumer = Consumer(consumer_config(bootstrap))
    consumer.subscribe([TOPIC])
    handle = handler(work_s, finish)
    finished: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def task(message: Any) -> None:
        handle(message)
        finished.put(message)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        while not finish.done.is_set():
            for message in consumer.consume(500, 0.01):
                if message.error() is None:
                    pool.submit(task, message)
            # One commit per finished message, from this thread: committing from the
            # pool threads while this one is in consume() deadlocked (confluent-kafka
            # 2.16.1), so the naive "commit in the task" loop cannot even be measured.
            while not finished.empty():
                consumer.commit(message=finished.get())  # asynchronous, as by default
        elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def run_batch(bootstrap: str, n: int, work_s: float, threads: int) -> float:
    finish = Finish(n)
    consumer = Consumer(consumer_config(bootstrap))
    consumer.subscribe([TOPIC])
    handle = handler(work_s, finish)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        while not finish.done.is_set():
            batch = [m for m in consumer.consume(500, 0.1) if m.error() is None]
            if batch:
                wait([pool.submit(handle, m) for m in batch])
                consumer.commit(asynchronous=False)
        elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def load(bootstrap: str, n: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    headers = [("taskorbit-topic", b"bench")]
    for i in range(n):
        while True:
            try:
                producer.produce(TOPIC, b"x" * 100, str(i).encode(), headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


def publishing(bootstrap: str, n: int) -> dict[str, float]:
    """msg/s of publish_many (idempotent, acks=all, waits for every report) and of a
    bare Producer with the same settings (produce all, then flush)."""
    transport = KafkaTransport(bootstrap, topic="bench-publish")
    app = orbit.Orbit(transport)
    payloads = [b"x" * 100] * n
    started = time.perf_counter()
    app.publish_many("bench", payloads)
    mine = n / (time.perf_counter() - started)
    transport.close()
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True, "acks": "all"}
    )
    started = time.perf_counter()
    for _ in range(n):
        while True:
            try:
                producer.produce(
                    "bench-publish", b'"eHh4"', headers=[("taskorbit-topic", b"bench")]
                )
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    bare = n / (time.perf_counter() - started)
    return {"publish_many": round(mine), "bare_producer": round(bare)}


def backpressure(bootstrap: str, n: int = 50_000) -> dict[str, Any]:
    import psutil

    global TOPIC
    TOPIC = "bench-bp"
    load(bootstrap, n)
    finish = Finish(n)
    transport = KafkaTransport(
        bootstrap, topic=TOPIC, group="bp", count_crashes=False, ordered=False,
        consumer_config=TEST_CONSUMER_CONFIG,
    )  # fmt: skip
    app = orbit.Orbit(transport, concurrency=64, buffer_size=256)
    app.handle("bench", handler(0.01, finish), codec="raw")
    rss: list[float] = []
    started = time.perf_counter()
    app.start()
    while not finish.done.wait(1.0):
        rss.append(psutil.Process().memory_info().rss / 2**20)
    elapsed = time.perf_counter() - started
    app.stop(timeout=10)
    counters = transport.counters
    transport.close()
    return {
        "messages": n,
        "seconds": round(elapsed, 1),
        "msg_per_s": round(n / elapsed),
        "rss_mib_first_last_max": [round(rss[0], 1), round(rss[-1], 1), round(max(rss), 1)],
        "rebalances": counters.rebalances,
        "revoked": counters.revoked,
        "pauses": counters.pauses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--slow-messages", type=int, default=20_000)
    parser.add_argument("--backpressure", action="store_true")
    args = parser.parse_args()
    topics = [f"{TOPIC}:{PARTITIONS}", f"bench-bp:{PARTITIONS}"]
    workdir = Path(tempfile.mkdtemp(prefix="taskorbit-bench-"))
    bootstrap, proc = start_kafka(workdir, brokers=1, topics=topics)
    try:
        if args.backpressure:
            print(json.dumps({"backpressure": backpressure(bootstrap)}, indent=2))
            return
        load(bootstrap, max(args.messages, args.slow_messages))
        systems = {"taskorbit": run_taskorbit, "per-message": run_per_message, "batch": run_batch}
        scenarios = {
            "noop": (args.messages, 0.0, 16),
            "10ms x 64": (args.slow_messages, 0.01, 64),
        }
        results: dict[str, dict[str, list[float]]] = {
            s: {k: [] for k in systems} for s in scenarios
        }
        for _ in range(args.repeat):
            for scenario, (n, work_s, threads) in scenarios.items():
                for name, run in systems.items():
                    elapsed = run(bootstrap, n, work_s, threads)
                    results[scenario][name].append(n / elapsed)
                    print(f"{scenario:10} {name:12} {n / elapsed:10,.0f} msg/s", file=sys.stderr)
        summary = {
            scenario: {name: round(statistics.median(rates)) for name, rates in by.items()}
            for scenario, by in results.items()
        }
        print(json.dumps({"median_msg_per_s": summary, "runs": results,
                          "publish": publishing(bootstrap, args.messages)}, indent=2))  # fmt: skip
    finally:
        stop_process(proc)


if __name__ == "__main__":
    main()
