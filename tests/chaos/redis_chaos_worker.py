"""A worker process on Redis Streams for the chaos and end-to-end tests.

Run as ``python tests/chaos/redis_chaos_worker.py --url redis://... --stream S``
with the project root on PYTHONPATH. It records what its handlers did in Redis so
that the test, in another process, can check it after SIGKILLs:

- hash ``runs``: message number -> how many times a handler started on it
- hash ``effects``: message number -> how many times its side effect committed
- hash ``workers``: worker name -> how many messages it ran
- counter ``poison-runs``: starts of the handler that kills the process

Topics: ``work`` (records, then commits its effect), ``poison`` (os._exit(3)
every time), ``failing`` (raises every time).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

import redis

import taskorbit as orbit
from taskorbit.idempotency_redis import RedisStore
from taskorbit.message import DEFAULT_IDEMPOTENCY_ATTR
from taskorbit.transports.redis_streams import RedisStreamsTransport


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--name", default=f"worker-{os.getpid()}")
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--buffer-size", type=int, default=4096)
    parser.add_argument("--max-retries", type=int, default=5)
    parser.add_argument("--poison-retries", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds each work handler takes")
    parser.add_argument("--store", action="store_true", help="guard handlers with RedisStore")
    parser.add_argument(
        "--atomic-effect",
        action="store_true",
        help="commit the effect and the store's done mark in one MULTI",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format=f"{args.name} %(levelname)s %(message)s")
    store = RedisStore(url=args.url, prefix="chaos:idem:") if args.store else None
    app = orbit.Orbit(
        RedisStreamsTransport(url=args.url, stream=args.stream, lease_s=args.lease),
        concurrency=args.concurrency,
        buffer_size=args.buffer_size,
        idempotency_store=store,
        # Short enough that a claim orphaned by SIGKILL frees itself within the test.
        claim_ttl_s=2.0,
        duplicate_delay_s=0.3,
        poll_timeout=0.2,
        shutdown_timeout=5.0,
    )
    r = redis.Redis.from_url(args.url)

    @app.task("work", max_retries=args.max_retries, base_delay=0.05)
    def work(payload: dict[str, Any], ctx: orbit.Context) -> None:
        n = str(payload["n"])
        r.hincrby("runs", n, 1)
        r.hincrby("workers", args.name, 1)
        if args.sleep:
            time.sleep(args.sleep)
        if store is not None and args.atomic_effect:
            with r.pipeline(transaction=True) as tx:
                tx.hincrby("effects", n, 1)
                store.complete_in(tx, ctx.attributes[DEFAULT_IDEMPOTENCY_ATTR], ttl_s=3600)
                tx.execute()
        else:
            r.hincrby("effects", n, 1)

    @app.task("poison", max_retries=args.poison_retries)
    def poison(payload: dict[str, Any]) -> None:
        r.incr("poison-runs")
        os._exit(3)

    @app.task("failing", max_retries=args.max_retries, base_delay=0.05)
    def failing(payload: dict[str, Any]) -> None:
        raise RuntimeError("this handler always fails")

    app.run()


def start_worker(url: str, stream: str, *flags: str, log: Any = None) -> Any:
    """Start this script in its own process (for tests); returns the Popen."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.Popen(
        [sys.executable, str(Path(__file__)), "--url", url, "--stream", stream, *flags],
        cwd=root,
        env=env,
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
    )


if __name__ == "__main__":
    main()
