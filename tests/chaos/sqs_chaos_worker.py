"""A worker process on SQS (moto_server) for the chaos tests.

Run as ``python tests/chaos/sqs_chaos_worker.py --endpoint URL --queue-url Q
--record FILE`` with the project root on PYTHONPATH and AWS credentials in the
environment. Handlers append one line per event to ``FILE`` (O_APPEND writes of
one short line are atomic, so several processes may share it):

- ``done N``   the ``work`` handler finished message N (then it is acked)
- ``poison``   the ``poison`` handler started; it then kills the process

Topics: ``work`` (sleeps ``--sleep`` seconds, records), ``poison`` (os._exit(3)).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

import taskorbit as orbit
from taskorbit.transports.sqs import SQSTransport


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--dlq-url")
    parser.add_argument("--record", required=True)
    parser.add_argument("--visibility", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-retries", type=int, default=1)
    parser.add_argument("--sleep", type=float, default=0.0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format=f"{os.getpid()} %(levelname)s %(message)s")
    transport = SQSTransport(
        args.queue_url,
        dlq_url=args.dlq_url,
        endpoint_url=args.endpoint,
        region_name="us-east-1",
        visibility_timeout=args.visibility,
    )
    app = orbit.Orbit(transport, concurrency=args.concurrency, poll_timeout=0.5)
    record = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @app.task("work")
    def work(payload: dict[str, Any]) -> None:
        time.sleep(args.sleep)
        os.write(record, f"done {payload['n']}\n".encode())

    @app.task("poison", max_retries=args.max_retries)
    def poison(payload: dict[str, Any]) -> None:
        os.write(record, b"poison\n")
        os._exit(3)

    app.run()


if __name__ == "__main__":
    main()
