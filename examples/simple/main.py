"""The smallest worker: one typed task, published and handled in one process.

Run it with ``python examples/simple/main.py``.
"""

from __future__ import annotations

import sys
import threading

import msgspec

import taskorbit as orbit


def say(line: str) -> None:
    """print() from handler threads, one write per line: print() writes the text
    and the newline separately, so concurrent lines could interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Greeting(msgspec.Struct):
    name: str


app = orbit.Orbit(concurrency=4)  # the in-memory transport
done = threading.Event()
greeted: list[str] = []


@app.task("greet")
def greet(msg: Greeting) -> None:
    greeted.append(msg.name)
    say(f"hello, {msg.name}")
    if len(greeted) == 3:
        done.set()


if __name__ == "__main__":
    for name in ("Ada", "Grace", "Linus"):
        greet.delay(Greeting(name=name))
    with app:  # start() ... stop(): drains before returning
        done.wait(10)
    print(f"greeted {len(greeted)}; stats: {app.stats()['completed']} completed")
