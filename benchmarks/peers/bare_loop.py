"""The floor of what Python threads do over Redis: no framework, no acks.

Producer: RPUSH in chunks of 1,000 values per command. Worker (a subprocess, like
every peer's): LPOP up to the free slots (BLPOP for one when the list is empty) and
submit each message to a ThreadPoolExecutor(N); at most 2·N messages are taken
ahead, about what the frameworks prefetch. Losing what was popped on a crash is the
price of having no acks, which is why it is a floor and not a peer.
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import redis

from benchmarks.peers._common import Args, handle, parse_args, python_m, run

QUEUE = "bench-bare"
CHUNK = 1_000


class Worker:
    """LPOP batches sized to the free slots, one executor task per message."""

    def __init__(self, url: str, concurrency: int) -> None:
        self.client = redis.Redis.from_url(url)
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="bare-worker")
        self.limit = 2 * concurrency
        self.in_flight = 0  # guarded by self.room
        self.room = threading.Condition()

    def run_forever(self) -> None:
        while True:
            with self.room:
                while self.in_flight >= self.limit:
                    self.room.wait()
                free = self.limit - self.in_flight
            # redis-py types replies loosely; with bytes responses these are bytes.
            items: list[bytes] | None = self.client.lpop(QUEUE, free)  # type: ignore[assignment]
            if not items:
                popped: list[bytes] | None = self.client.blpop([QUEUE], timeout=1)  # type: ignore[assignment]
                if popped is None:
                    continue
                items = [popped[1]]
            with self.room:
                self.in_flight += len(items)
            for raw in items:
                self.pool.submit(self.handle_one, raw)

    def handle_one(self, raw: bytes) -> None:
        try:
            run_key, target, sleep_ms = json.loads(raw)
            handle(run_key, target, sleep_ms)
        finally:
            with self.room:
                self.in_flight -= 1
                self.room.notify()


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--worker":
        args = parse_args("bare-loop worker", argv[1:])
        Worker(args.url, args.concurrency).run_forever()
        return
    args = parse_args("bare-loop", argv)
    client = redis.Redis.from_url(args.url)

    def publish(run_key: str, target: int, sleep_ms: int, count: int) -> None:
        body = json.dumps([run_key, target, sleep_ms])
        for start in range(0, count, CHUNK):
            client.rpush(QUEUE, *([body] * min(CHUNK, count - start)))

    run("bare-loop", args, worker_argv(args), publish)


def worker_argv(args: Args) -> list[str]:
    return python_m(
        "benchmarks.peers.bare_loop", "--worker",
        "--url", args.url, "--concurrency", str(args.concurrency),
    )  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
