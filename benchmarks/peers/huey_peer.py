"""Huey, RedisHuey, one consumer process with N worker threads
(``huey_consumer -w N -k thread``); the producer calls the task once per message."""

from __future__ import annotations

import os

from benchmarks.peers._common import URL_ENV, parse_args, python_m, run


def main() -> None:
    args = parse_args("huey")
    # RedisHuey reads the URL when the module is imported.
    os.environ[URL_ENV] = args.url
    from benchmarks.peers.huey_app import record

    worker = python_m(
        "huey.bin.huey_consumer", "benchmarks.peers.huey_app.huey",
        "-w", str(args.concurrency), "-k", "thread", "-q",
    )  # fmt: skip

    def publish(run_key: str, target: int, sleep_ms: int, count: int) -> None:
        for _ in range(count):
            record(run_key, target, sleep_ms)

    run("huey", args, worker, publish)


if __name__ == "__main__":
    main()
