"""Celery, threads pool, Redis broker, acks_late: ``celery worker -P threads -c N``
in a subprocess; the producer calls ``record.delay(...)`` once per message."""

from __future__ import annotations

import os

from benchmarks.peers._common import URL_ENV, parse_args, python_m, run


def main() -> None:
    args = parse_args("celery")
    # The app reads the broker URL when it is imported.
    os.environ[URL_ENV] = args.url
    from benchmarks.peers.celery_app import record

    worker = python_m(
        "celery", "-A", "benchmarks.peers.celery_app", "worker",
        "-P", "threads", "-c", str(args.concurrency),
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-l", "WARNING",
    )  # fmt: skip

    def publish(run_key: str, target: int, sleep_ms: int, count: int) -> None:
        for _ in range(count):
            record.delay(run_key, target, sleep_ms)

    run("celery", args, worker, publish)


if __name__ == "__main__":
    main()
