"""A worker process for test_worker.py: the record at the first offset it sees with
body ``0`` sleeps ``slow_s``; every handled body is appended to ``log`` (one line
each, flushed), so that the test, in another process, can count runs after a
SIGKILL.

    python slow_worker.py BOOTSTRAP TOPIC GROUP LOG SLOW_S ATTEMPTS_DIR
"""

from __future__ import annotations

import sys
import time

import taskorbit as orbit
from taskorbit.transports.kafka import KafkaTransport
from tests.servers.kafka import TEST_CONSUMER_CONFIG


def main() -> None:
    bootstrap, topic, group, log, slow_s, attempts = sys.argv[1:7]
    transport = KafkaTransport(
        bootstrap, topic=topic, group=group, attempts_dir=attempts, ordered=False,
        consumer_config=TEST_CONSUMER_CONFIG,
    )  # fmt: skip
    app = orbit.Orbit(transport, concurrency=8, buffer_size=256, ack_interval_s=0.01)
    out = open(log, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    @app.task("work", codec="raw")
    def work(body: bytes) -> None:
        if body == b"0":
            time.sleep(float(slow_s))
        out.write(body.decode() + "\n")

    app.run()


if __name__ == "__main__":
    main()
