"""Delayed tasks: ``countdown=`` seconds from now or an ``eta=`` datetime.

Run it with ``python examples/delayed/main.py``.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time

import taskorbit as orbit


def say(line: str) -> None:
    """print() from handler threads, one write per line: print() writes the text
    and the newline separately, so concurrent lines could interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


app = orbit.Orbit()
started = time.monotonic()
ran: list[str] = []
done = threading.Event()


@app.task("remind")
def remind(what: str) -> None:
    ran.append(what)
    say(f"{time.monotonic() - started:4.1f} s  {what}")
    if len(ran) == 3:
        done.set()


if __name__ == "__main__":
    remind.delay("at once")
    remind.delay("after a 0.5 s countdown", countdown=0.5)
    remind.delay(
        "at an ETA 1 s away", eta=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    )
    with app:
        done.wait(10)
    print("order:", " -> ".join(ran))
