"""taskorbit in one screen, on the in-memory transport (`make demo`).

Four tasks: one that succeeds, one that fails twice and then succeeds, a poison
payload that lands in the dead-letter queue, and a delayed reminder.
"""

from __future__ import annotations

import time

import msgspec

import taskorbit as orbit

transport = orbit.MemoryTransport()


class Narrator(orbit.Hooks):
    """Prints what the worker does, as it happens."""

    def on_retry(self, message: orbit.Message, delay_s: float, reason: str) -> None:
        print(f"  retry   {message.topic} attempt {message.attempt} in {delay_s:.2f} s ({reason})")

    def on_dead_letter(self, message: orbit.Message, reason: str) -> None:
        print(f"  DLQ     {message.topic}: {reason}")


app = orbit.Orbit(transport, concurrency=8, hooks=[Narrator()])
started = time.monotonic()


class Email(msgspec.Struct):
    to: str
    subject: str
    body: str = ""


class Report(msgspec.Struct):
    name: str


@app.task("email.send")
def send_email(email: Email) -> None:
    print(f"  done    email to {email.to}: {email.subject!r}")


@app.task("report.build", max_retries=5, base_delay=0.2)
def build_report(report: Report, ctx: orbit.Context) -> None:
    if ctx.attempt < 3:
        raise ConnectionError("database busy")
    print(f"  done    report {report.name!r} on attempt {ctx.attempt}")


@app.task("reminder.send")
def send_reminder(text: str) -> None:
    print(f"  done    reminder {text!r} after {time.monotonic() - started:.2f} s")


def main() -> None:
    print("publishing four messages")
    send_email.delay(Email(to="ada@example.com", subject="Welcome"))
    build_report.delay(Report(name="monthly"))
    send_reminder.delay("stand up and stretch", countdown=1.0)
    # A payload that does not match Email, from a producer that does not check
    # (here: a raw message; .delay() would refuse it with PayloadError). Decoding
    # fails in the worker, so no retry can help: it goes to the dead-letter queue.
    transport.publish([orbit.Message("email.send", b'{"to": "bob@example.com"}')])

    with app:
        transport.wait_idle(timeout=10.0)

    stats = app.stats()
    print(
        f"completed {stats['completed']}, retried {stats['retried']}, "
        f"dead-lettered {stats['dead_lettered']}"
    )
    for dead in transport.dead_letters:
        reason = dead.attributes["taskorbit-dlq-reason"]
        print(f"dead letter: topic={dead.topic} body={dead.body.decode()} reason={reason}")


if __name__ == "__main__":
    main()
