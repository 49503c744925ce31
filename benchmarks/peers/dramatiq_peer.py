"""Dramatiq, RedisBroker, one worker process with N threads
(``dramatiq --processes 1 --threads N``); the producer calls ``record.send(...)``."""

from __future__ import annotations

import os

from benchmarks.peers._common import URL_ENV, parse_args, python_m, run


def main() -> None:
    args = parse_args("dramatiq")
    # The broker reads the URL when the module is imported.
    os.environ[URL_ENV] = args.url
    from benchmarks.peers.dramatiq_actors import record

    worker = python_m(
        "dramatiq", "benchmarks.peers.dramatiq_actors",
        "--processes", "1", "--threads", str(args.concurrency),
    )  # fmt: skip

    def publish(run_key: str, target: int, sleep_ms: int, count: int) -> None:
        for _ in range(count):
            record.send(run_key, target, sleep_ms)

    run("dramatiq", args, worker, publish)


if __name__ == "__main__":
    main()
