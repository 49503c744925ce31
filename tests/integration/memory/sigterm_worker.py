"""A worker process for the SIGTERM test: prints when handlers start and finish."""

from __future__ import annotations

import logging
import sys
import time

import taskorbit as orbit

transport = orbit.MemoryTransport()
app = orbit.Orbit(transport, concurrency=4, shutdown_timeout=10.0)


@app.task("slow")
def slow(n: int) -> None:
    say(f"start {n}")
    time.sleep(1.0)
    say(f"finish {n}")


def say(line: str) -> None:
    # One write per line: print() writes the text and the newline separately, and
    # lines from several handler threads would interleave.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    app.publish_many("slow", list(range(12)))
    app.run()
    pending = transport.pending()
    say(f"stopped ready={pending['ready']} in_flight={pending['in_flight']}")
    sys.exit(0)
