"""A Flask app whose view publishes a task; `taskorbit worker app:tasks` runs it.

Run it (in-memory transport: publisher and worker share this one process)::

    python examples/flask/app.py

or with Redis between a web process and a worker process::

    TASKORBIT_TRANSPORT=redis://localhost:6379/0 flask --app examples/flask/app.py run
    TASKORBIT_TRANSPORT=redis://localhost:6379/0 taskorbit worker app:tasks   # in examples/flask
"""

from __future__ import annotations

import os

import msgspec
from flask import Flask, current_app, jsonify, request

import taskorbit as orbit
from taskorbit.contrib.flask import TaskOrbit

tasks = TaskOrbit()


class Welcome(msgspec.Struct):
    email: str


sent: list[str] = []  # what the handler did, for the demo and the test


class MailServerDown(ConnectionError):
    """The mail server refused the connection: worth retrying later."""


@tasks.task("welcome.send", max_retries=3, base_delay=1.0)
def send_welcome(msg: Welcome) -> orbit.Result | None:
    # The Flask app context is pushed around every handler run.
    domain = msg.email.rpartition("@")[2]
    if domain in current_app.config["BLOCKED_DOMAINS"]:
        return orbit.dead_letter(f"domain {domain} is blocked")
    if current_app.config["MAIL_DOWN"]:
        raise MailServerDown("mail server refused the connection")
    current_app.logger.info("welcoming %s", msg.email)
    sent.append(f"{current_app.config['SITE_NAME']} welcomes {msg.email}")
    return None


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SITE_NAME"] = "Example Shop"
    app.config["BLOCKED_DOMAINS"] = set(
        filter(None, os.environ.get("BLOCKED_DOMAINS", "").split(","))
    )
    app.config["MAIL_DOWN"] = os.environ.get("MAIL_DOWN", "") == "1"  # to see a failure
    app.config["TASKORBIT_TRANSPORT"] = os.environ.get("TASKORBIT_TRANSPORT", "memory://")
    app.config["TASKORBIT_CONCURRENCY"] = 4
    tasks.init_app(app)

    @app.post("/signup")
    def signup():  # type: ignore[no-untyped-def]
        email = request.get_json()["email"]
        message_id = send_welcome.delay(Welcome(email=email))
        return jsonify(queued=message_id), 202

    return app


app = create_app()

if __name__ == "__main__":
    import time

    tasks.orbit.start()  # a worker in this process, for the demo
    try:
        response = app.test_client().post("/signup", json={"email": "ada@example.com"})
        print("POST /signup ->", response.status_code, response.get_json())
        deadline = time.monotonic() + 10
        while not sent and time.monotonic() < deadline:
            time.sleep(0.01)
        print("worker:", sent[0] if sent else "nothing handled")
    finally:
        tasks.orbit.stop()
