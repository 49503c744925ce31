"""Checked by mypy --strict in test_mypy.py, never run: what a type checker says
about payloads given to ``Task.delay``. Each line that mypy must flag says so in
its comment; every other line must pass."""

from __future__ import annotations

from typing import assert_type

import msgspec

import taskorbit as orbit
from taskorbit.contrib.flask import TaskOrbit

app = orbit.Orbit()
flask_tasks = TaskOrbit()


class Welcome(msgspec.Struct):
    email: str


@app.task("welcome.send")
def send(msg: Welcome, ctx: orbit.Context) -> None: ...


@app.task("welcome.plain", max_retries=3, idempotency_key=lambda m: m.email)
def send_plain(msg: Welcome) -> orbit.Result | None: ...


@app.task
def bare(msg: Welcome) -> None: ...


def by_hand(msg: Welcome, ctx: orbit.Context) -> None: ...


handled = app.handle("welcome.by_hand", by_hand, idempotency_key=lambda m: m.email)


@flask_tasks.task("welcome.flask")
def in_flask(msg: Welcome) -> None: ...


assert_type(send, orbit.Task[Welcome])
assert_type(send_plain, orbit.Task[Welcome])
assert_type(bare, orbit.Task[Welcome])
assert_type(handled, orbit.Task[Welcome])
assert_type(in_flask, orbit.Task[Welcome])

send.delay(Welcome(email="ada@example.org"), countdown=5)
send_plain.delay(Welcome(email="ada@example.org"))
bare.delay(Welcome(email="ada@example.org"))
handled.delay(Welcome(email="ada@example.org"), idempotency_key="k")

send.delay(123)  # error: not a Welcome
send_plain.delay({"email": "ada@example.org"})  # error: a dict is not a Welcome
