"""End-to-end Pub/Sub throughput and RPCs per message: taskorbit against the consumer
a user would otherwise write with google-cloud-pubsub (``subscriber.subscribe`` with
a callback on a thread pool), in the same run, against Google's emulator.

Both consumers read the same messages: one topic, one subscription each, loaded
before either starts. Each handler decodes the JSON payload and "works" for
``--work-ms`` (a sleep, standing in for I/O), at the same concurrency. Time runs
from the consumer's start until its last handler finished (not until the last
publish). RPCs are counted at the client: every unary call the consumer makes
(pull, acknowledge, modify_ack_deadline) and every streaming pull it opens.

    .venv/bin/python benchmarks/pubsub_e2e.py --messages 5000 --work-ms 0,5
    # or against a running emulator: --emulator-host 127.0.0.1:8085

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROJECT = "taskorbit-bench"


@contextmanager
def emulator(host: str | None) -> Iterator[str]:
    """Use ``host`` or start a private emulator on a free port (log in a temp dir)."""
    if host:
        yield host
        return
    from tests.servers import free_port, start_process, stop_process, wait_until
    from tests.servers.pubsub import EMULATOR

    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="taskorbit-bench-")) / "emulator.log"
    proc = start_process([str(EMULATOR), "--host=127.0.0.1", f"--port={port}"], log)
    try:
        wait_until(
            lambda: "Server started" in log.read_text(errors="replace"), 60.0, "emulator", log
        )
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


def count_calls(client: Any, names: tuple[str, ...], counts: Counter[str]) -> None:
    """Wrap ``client``'s methods so that each call adds one to ``counts[name]``."""
    lock = threading.Lock()
    for name in names:
        method = getattr(client, name)

        def counted(*args: Any, _method: Any = method, _name: str = name, **kwargs: Any) -> Any:
            with lock:
                counts[_name] += 1
            return _method(*args, **kwargs)

        setattr(client, name, counted)


class Finish:
    """Counts handled messages; ``done`` is set when the last one finished."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.handled = 0
        self.done = threading.Event()
        self.finished_at = 0.0
        self._lock = threading.Lock()

    def one(self) -> None:
        with self._lock:
            self.handled += 1
            if self.handled == self.expected:
                self.finished_at = time.perf_counter()
                self.done.set()


def work(body: bytes, work_s: float) -> None:
    msgspec.json.decode(body)
    if work_s:
        time.sleep(work_s)


def run_taskorbit(
    subscription: str, topic: str, n: int, concurrency: int, work_s: float
) -> dict[str, Any]:
    from google.cloud import pubsub_v1

    import taskorbit as orbit
    from taskorbit.transports.pubsub import PubSubTransport

    counts: Counter[str] = Counter()
    subscriber = pubsub_v1.SubscriberClient()
    count_calls(subscriber, ("pull", "acknowledge", "modify_ack_deadline"), counts)
    transport = PubSubTransport(subscription, topic, subscriber=subscriber, ack_deadline_s=60)
    app = orbit.Orbit(transport, concurrency=concurrency, buffer_size=1024, poll_timeout=1.0)
    finish = Finish(n)

    def handler(body: bytes) -> None:
        work(body, work_s)
        finish.one()

    app.handle("bench", handler)
    started = time.perf_counter()
    app.start()
    finished = finish.done.wait(600.0)
    app.stop(timeout=30.0)
    transport.close()
    subscriber.close()
    return result("taskorbit", n, finish, started, finished, counts)


def run_plain_subscribe(
    subscription: str, n: int, concurrency: int, work_s: float
) -> dict[str, Any]:
    from google.cloud import pubsub_v1
    from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

    counts: Counter[str] = Counter()
    subscriber = pubsub_v1.SubscriberClient()
    count_calls(subscriber, ("streaming_pull", "acknowledge", "modify_ack_deadline"), counts)
    finish = Finish(n)

    def callback(message: Any) -> None:
        work(message.data, work_s)
        message.ack()
        finish.one()

    scheduler = ThreadScheduler(ThreadPoolExecutor(max_workers=concurrency))
    started = time.perf_counter()
    future = subscriber.subscribe(subscription, callback, scheduler=scheduler)
    finished = finish.done.wait(600.0)
    time.sleep(0.2)  # let the client send its last acks before it is cancelled
    future.cancel()
    future.result(timeout=30.0)
    subscriber.close()
    return result("google-cloud-pubsub subscribe()", n, finish, started, finished, counts)


def result(
    consumer: str, n: int, finish: Finish, started: float, finished: bool, counts: Counter[str]
) -> dict[str, Any]:
    seconds = (finish.finished_at or time.perf_counter()) - started
    rpcs = sum(counts.values())
    return {
        "consumer": consumer,
        "finished": finished,
        "handled": finish.handled,
        "seconds": round(seconds, 3),
        "msg_per_s": round(finish.handled / seconds, 1),
        "rpcs": dict(counts),
        "rpcs_per_message": round(rpcs / max(1, finish.handled), 4),
    }


def load(host: str, n: int, consumers: int) -> tuple[str, list[str]]:
    """One topic, one subscription per consumer, ``n`` messages published."""
    from google.cloud import pubsub_v1

    from taskorbit.message import Message
    from taskorbit.transports.pubsub import PubSubTransport

    name = f"bench-{uuid.uuid4().hex[:8]}"
    topic = f"projects/{PROJECT}/topics/{name}"
    admin = pubsub_v1.SubscriberClient()
    pubsub_v1.PublisherClient().create_topic(name=topic)
    subscriptions = [f"projects/{PROJECT}/subscriptions/{name}-{i}" for i in range(consumers)]
    for sub in subscriptions:
        admin.create_subscription(request={"name": sub, "topic": topic, "ack_deadline_seconds": 60})
    producer = PubSubTransport(topic=topic)
    body = msgspec.json.encode({"to": "someone@example.com", "subject": "hello", "n": 0})
    for start in range(0, n, 1000):
        producer.publish([Message("bench", body) for _ in range(min(1000, n - start))])
    producer.close()
    admin.close()
    return topic, subscriptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--work-ms", default="0,5", help="comma-separated handler sleeps")
    parser.add_argument("--emulator-host")
    parser.add_argument("--repeat", type=int, default=2, help="rounds, alternating who goes first")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with emulator(args.emulator_host) as host:
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        # Warm the emulator's JVM up first, so that whoever runs first is not penalised.
        topic, (ours, theirs) = load(host, 500, 2)
        run_taskorbit(ours, topic, 500, args.concurrency, 0.0)
        run_plain_subscribe(theirs, 500, args.concurrency, 0.0)
        for work_ms in (float(w) for w in args.work_ms.split(",")):
            for round_ in range(args.repeat):
                topic, (ours, theirs) = load(host, args.messages, 2)
                work_s = work_ms / 1000
                consumers: list[Callable[[], dict[str, Any]]] = [
                    functools.partial(
                        run_taskorbit, ours, topic, args.messages, args.concurrency, work_s
                    ),
                    functools.partial(
                        run_plain_subscribe, theirs, args.messages, args.concurrency, work_s
                    ),
                ]
                if round_ % 2:
                    consumers.reverse()
                for consumer in consumers:
                    runs.append({"work_ms": work_ms, "round": round_, **consumer()})
    summary = {}
    for key in sorted({(r["work_ms"], r["consumer"]) for r in runs}):
        mine = [r for r in runs if (r["work_ms"], r["consumer"]) == key]
        summary[f"{key[1]} @ {key[0]:g} ms"] = {
            "msg_per_s_median": statistics.median(r["msg_per_s"] for r in mine),
            "rpcs_per_message_median": statistics.median(r["rpcs_per_message"] for r in mine),
        }
    report = {
        "benchmark": "pubsub_e2e",
        "server": "Google Pub/Sub emulator",
        "messages": args.messages,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "summary": summary,
        "runs": runs,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
