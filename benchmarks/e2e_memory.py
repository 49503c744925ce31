"""End-to-end in-memory benchmark (issue 2): taskorbit's worker on its in-memory
transport against a plain ThreadPoolExecutor, and an RSS run over 1,000,000 messages.

What is timed: from the first publish to the moment the LAST handler returned (not
the last publish). One producer thread (this script's main thread) publishes while
the worker runs in the same process, as an embedded worker would. Each handler ends
with ``Finish.hit()``; the call that completes the run sets an Event, so the clock
stops without polling.

Systems:
  taskorbit        ``Orbit(MemoryTransport(), concurrency=C, buffer_size=4096)``,
                   one ``task.delay(payload)`` per message
  taskorbit-many   the same worker, ``app.publish_many`` in bursts of 1,024
  threadpool       ``ThreadPoolExecutor(C).submit(handler, payload)`` per message:
                   no ring, no codec, no acks; the baseline the issue quotes

Prints one JSON line: ``{"system", "messages", "seconds", "msg_per_s", ...}``.
``--rss`` instead sends ``--messages`` (default 1,000,000) through the taskorbit
worker while a thread samples the process's RSS, and prints start, peak and end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

HANDLERS = {"noop": 0.0, "sleep10ms": 0.010}
BURST = 1_024
PAYLOAD = {"order": 42, "kind": "bench"}


class Finish:
    """Counts handler completions; the one that reaches the target sets ``done``.

    ``next()`` on an itertools.count is atomic under the GIL, so no lock sits in the
    handler's path. ``completed`` is a relaxed copy, good enough for throttling.
    """

    def __init__(self) -> None:
        self.done = threading.Event()
        self.arm(0)

    def arm(self, target: int) -> None:
        """Start counting towards ``target``; call only while no handler runs."""
        self._count = itertools.count(1)
        self.target = target
        self.completed = 0
        self.done.clear()

    def hit(self) -> None:
        n = next(self._count)
        self.completed = n
        if n == self.target:
            self.done.set()


def make_handler(finish: Finish, sleep_s: float) -> Callable[[dict[str, Any]], None]:
    if sleep_s:

        def sleepy(msg: dict[str, Any]) -> None:
            time.sleep(sleep_s)
            finish.hit()

        return sleepy

    def noop(msg: dict[str, Any]) -> None:
        finish.hit()

    return noop


class TaskorbitSystem:
    """taskorbit's worker on the in-memory transport, started before the clock."""

    def __init__(self, concurrency: int, buffer_size: int, sleep_s: float, many: bool) -> None:
        import taskorbit as orbit
        from taskorbit.transports.memory import MemoryTransport

        self.finish = Finish()
        self.app = orbit.Orbit(
            transport=MemoryTransport(), concurrency=concurrency, buffer_size=buffer_size
        )
        self.task = self.app.task("bench.handler")(make_handler(self.finish, sleep_s))
        self.many = many
        self.app.start()

    def publish(self, count: int, window: int) -> None:
        """Publish ``count`` messages in bursts; with ``window`` > 0, wait between
        bursts while more than ``window`` messages are published but not handled,
        so that the in-memory broker's queue stays bounded too."""
        burst = [PAYLOAD] * BURST
        sent = 0
        while sent < count:
            n = min(BURST, count - sent)
            if self.many:
                self.app.publish_many("bench.handler", burst[:n])
            else:
                delay = self.task.delay
                for _ in range(n):
                    delay(PAYLOAD)
            sent += n
            while window and sent - self.finish.completed > window:
                time.sleep(0.0005)

    def stats(self) -> dict[str, int]:
        return self.app.stats()

    def close(self) -> None:
        self.app.stop(timeout=30)


class ThreadPoolSystem:
    """A plain executor, one submit per message (its queue is unbounded)."""

    def __init__(self, concurrency: int, buffer_size: int, sleep_s: float, many: bool) -> None:
        self.finish = Finish()
        self.handler = make_handler(self.finish, sleep_s)
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="bench-worker")

    def publish(self, count: int, window: int) -> None:
        submit, handler = self.pool.submit, self.handler
        for _ in range(count):
            submit(handler, PAYLOAD)

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.pool.shutdown(wait=True)


SYSTEMS: dict[str, Callable[[int, int, float, bool], TaskorbitSystem | ThreadPoolSystem]] = {
    "taskorbit": lambda c, b, s, _: TaskorbitSystem(c, b, s, many=False),
    "taskorbit-many": lambda c, b, s, _: TaskorbitSystem(c, b, s, many=True),
    "threadpool": lambda c, b, s, _: ThreadPoolSystem(c, b, s, many=False),
}


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def warm_up(system: TaskorbitSystem | ThreadPoolSystem) -> None:
    """Run a few messages first, so that every worker thread exists before t0."""
    warm = 256
    system.finish.arm(warm)
    system.publish(warm, 0)
    if not system.finish.done.wait(60):
        raise TimeoutError("the warm-up messages were not handled within 60 s")
    time.sleep(0.1)  # let the last warm-up handlers return before re-arming


def timed_run(system: TaskorbitSystem | ThreadPoolSystem, messages: int, window: int) -> float:
    """Seconds from the first publish until the last of ``messages`` was handled."""
    system.finish.arm(messages)
    t0 = time.perf_counter()
    system.publish(messages, window)
    if not system.finish.done.wait(600):
        raise TimeoutError(f"only {system.finish.completed} of {messages} handled in 600 s")
    return time.perf_counter() - t0


def throughput(args: argparse.Namespace) -> dict[str, object]:
    sleep_s = HANDLERS[args.handler]
    system = SYSTEMS[args.system](args.concurrency, args.buffer_size, sleep_s, False)
    try:
        warm_up(system)
        cpu_before = cpu_seconds()
        seconds = timed_run(system, args.messages, 0)
        cpu = cpu_seconds() - cpu_before
    finally:
        system.close()
    return {
        "system": args.system,
        "messages": args.messages,
        "seconds": round(seconds, 4),
        "msg_per_s": round(args.messages / seconds, 1),
        "concurrency": args.concurrency,
        "handler": args.handler,
        # Producer and worker share this process; this is their CPU together.
        "cpu_us_per_msg": {"process": round(1e6 * cpu / args.messages, 2)},
    }


def rss_run(args: argparse.Namespace) -> dict[str, object]:
    """RSS while ``messages`` no-op messages pass through a ``buffer_size`` ring."""
    import psutil  # type: ignore[import-untyped]

    process = psutil.Process()
    samples: list[tuple[float, float, int]] = []  # (seconds, RSS MiB, ring length)
    stop = threading.Event()
    system = TaskorbitSystem(args.concurrency, args.buffer_size, 0.0, many=False)
    t0 = 0.0  # set when sampling starts

    def sample() -> None:
        while not stop.wait(0.05):
            ring = system.stats().get("ring_length", -1)
            samples.append((time.perf_counter() - t0, process.memory_info().rss / 2**20, ring))

    sampler = threading.Thread(target=sample, name="bench-rss-sampler", daemon=True)
    try:
        warm_up(system)
        rss_start = process.memory_info().rss / 2**20
        t0 = time.perf_counter()
        sampler.start()
        # The window keeps the in-memory broker's own queue bounded as well: with an
        # unbounded producer the RSS would measure the backlog, not the worker.
        seconds = timed_run(system, args.messages, args.window)
        rss_end = process.memory_info().rss / 2**20
    finally:
        stop.set()
        system.close()
    peak = max([rss_start, rss_end, *(mib for _, mib, _ in samples)])
    # Once the ring and the broker's window have filled (the first tenth of the run),
    # a bounded worker's RSS should not grow any more: this is the number to watch.
    settled = next((mib for t, mib, _ in samples if t >= seconds / 10), rss_start)
    return {
        "system": "taskorbit",
        "messages": args.messages,
        "seconds": round(seconds, 4),
        "msg_per_s": round(args.messages / seconds, 1),
        "buffer_size": args.buffer_size,
        "window": args.window,
        "rss_start_mib": round(rss_start, 1),
        "rss_peak_mib": round(peak, 1),
        "rss_end_mib": round(rss_end, 1),
        "rss_at_10pct_mib": round(settled, 1),
        "rss_growth_last_90pct_mib": round(rss_end - settled, 1),
        "ring_length_max": max((ring for _, _, ring in samples), default=0),
        "samples": [[round(t, 3), round(mib, 2), ring] for t, mib, ring in samples],
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", choices=sorted(SYSTEMS), default="taskorbit")
    parser.add_argument("--handler", choices=sorted(HANDLERS), default="noop")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--buffer-size", type=int, default=4096)
    parser.add_argument("--rss", action="store_true", help="the RSS run instead of throughput")
    parser.add_argument(
        "--window",
        type=int,
        default=8192,
        help="--rss only: most messages published but not yet handled",
    )
    args = parser.parse_args(argv)
    if args.messages is None:
        args.messages = 1_000_000 if args.rss else 200_000
    if args.messages < 1 or args.concurrency < 1:
        parser.error("--messages and --concurrency must be greater than 0")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    result = rss_run(args) if args.rss else throughput(args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
