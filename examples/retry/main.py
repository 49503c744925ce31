"""Retries: an exception retries with exponential backoff, an explicit
``orbit.retry(delay=...)`` picks its own delay, and a task that keeps failing ends
in the dead-letter queue after ``max_retries``.

    python examples/retry/main.py
"""

from __future__ import annotations

import sys

import taskorbit as orbit


def say(line: str) -> None:
    """print() from handler threads, one write per line: print() writes the text
    and the newline separately, so concurrent lines could interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


transport = orbit.MemoryTransport()


class Narrator(orbit.Hooks):
    def on_retry(self, message: orbit.Message, delay_s: float, reason: str) -> None:
        say(f"retry {message.topic} attempt {message.attempt} in {delay_s:.2f} s: {reason}")

    def on_dead_letter(self, message: orbit.Message, reason: str) -> None:
        say(f"dead-lettered {message.topic} after attempt {message.attempt}: {reason}")


app = orbit.Orbit(transport, hooks=[Narrator()])


@app.task("flaky", max_retries=5, base_delay=0.05)
def flaky(n: int, ctx: orbit.Context) -> None:
    if ctx.attempt < 3:
        raise ConnectionError(f"upstream timeout on attempt {ctx.attempt}")
    say(f"flaky succeeded on attempt {ctx.attempt}")


@app.task("rate_limited")
def rate_limited(n: int, ctx: orbit.Context) -> orbit.Result | None:
    if ctx.attempt == 1:
        return orbit.retry(delay=0.1, reason="429: slow down")
    say(f"rate_limited succeeded on attempt {ctx.attempt}")
    return None


@app.task("hopeless", max_retries=2, base_delay=0.02)
def hopeless(n: int) -> None:
    raise ValueError("this never works")


if __name__ == "__main__":
    flaky.delay(1)
    rate_limited.delay(2)
    hopeless.delay(3)
    with app:
        transport.wait_idle(20)
    print(f"dead letters: {[m.topic for m in transport.dead_letters]}")
