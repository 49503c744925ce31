"""A worker process on Pub/Sub for the chaos tests.

Run as ``python tests/chaos/pubsub_chaos_worker.py --subscription S --topic T
--out FILE`` with PUBSUB_EMULATOR_HOST set and the project root on PYTHONPATH.
Every handler that finishes appends one line ``<n>`` to FILE (one O_APPEND write
per line, so lines of several threads and processes never interleave).

Topics: ``work`` (takes --sleep seconds, then records), ``poison`` (kills the
process with os._exit(3) every time).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import taskorbit as orbit
from taskorbit.transports.pubsub import PubSubTransport


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscription", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--dlq-topic")
    parser.add_argument("--out", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-retries", type=int, default=5)
    parser.add_argument("--sleep", type=float, default=0.02)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    transport = PubSubTransport(
        args.subscription, args.topic, dlq_topic=args.dlq_topic, ack_deadline_s=10
    )
    app = orbit.Orbit(transport, concurrency=args.concurrency, buffer_size=64, poll_timeout=0.5)
    out = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @app.task("work", max_retries=args.max_retries, base_delay=0.1)
    def work(n: int) -> None:
        time.sleep(args.sleep)
        os.write(out, f"{n}\n".encode())

    @app.task("poison", max_retries=args.max_retries)
    def poison(n: int) -> None:
        os.write(out, f"poison {n}\n".encode())
        os._exit(3)  # a crash no exception handler can catch

    sys.stderr.write("worker ready\n")
    sys.stderr.flush()
    app.run()


if __name__ == "__main__":
    main()
