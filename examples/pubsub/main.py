"""Google Cloud Pub/Sub (or its emulator: set PUBSUB_EMULATOR_HOST).

    PUBSUB_EMULATOR_HOST=127.0.0.1:8085 python examples/pubsub/main.py

Creates the topic ``example-events`` and the subscription ``example-events-worker``
if they are missing (``create=True``).
"""

from __future__ import annotations

import os
import sys
import threading

import taskorbit as orbit
from taskorbit.transports.pubsub import PubSubTransport


def say(line: str) -> None:
    """print() from handler threads, one write per line: print() writes the text
    and the newline separately, so concurrent lines could interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


project = os.environ.get("PUBSUB_PROJECT_ID", "example-project")
transport = PubSubTransport(
    f"projects/{project}/subscriptions/example-events-worker",
    f"projects/{project}/topics/example-events",
    create=True,
    ack_deadline_s=10,
)
app = orbit.Orbit(transport, concurrency=4, poll_timeout=1.0)
done = threading.Event()
counted: list[str] = []


@app.task("signup")
def signup(user: dict[str, str]) -> None:
    counted.append(user["name"])
    say(f"welcome, {user['name']}")
    if len(counted) == 2:
        done.set()


if __name__ == "__main__":
    signup.delay({"name": "Ada"})
    signup.delay({"name": "Grace"})
    with app:
        done.wait(30)
    print(f"handled {len(counted)}")
    transport.close()
