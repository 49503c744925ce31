"""`taskorbit publish` and `taskorbit dlq` as a newcomer meets them, run as real
subprocesses: an in-memory app is refused, a misspelt topic is warned about, and a
payload the handler would refuse is a sentence, not a traceback."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.unit.cli.test_cli import Proc

# A broker that is not in-memory and needs no server: published messages are
# appended to a file, one JSON object per line.
BROKER = textwrap.dedent(
    """
    import itertools, json, os, time
    from taskorbit.transports.base import Transport

    class FileTransport(Transport):
        name = "file"
        durable = True

        def __init__(self, path):
            self.path = path
            self._ids = itertools.count(1)

        def receive(self, max_messages, timeout):
            time.sleep(min(timeout, 0.05))
            return []

        def ack(self, messages):
            return []

        def nack(self, messages, delay=0.0):
            pass

        def dead_letter(self, message, reason):
            pass

        def publish(self, messages):
            ids = []
            with open(self.path, "a") as f:
                for m in messages:
                    ids.append(f"file-{next(self._ids)}")
                    f.write(json.dumps({"topic": m.topic, "body": m.body.decode(),
                                        "attributes": m.attributes}) + "\\n")
            return ids
    """
)

APP = textwrap.dedent(
    """
    import msgspec
    import taskorbit as orbit
    from filebroker import FileTransport

    app = orbit.Orbit(FileTransport("published.jsonl"))
    memory_app = orbit.Orbit()

    class Welcome(msgspec.Struct):
        email: str

    @app.task("welcome.send")
    def send_welcome(msg: Welcome) -> None: ...

    @app.task("welcome.resend")
    def resend_welcome(msg: Welcome) -> None: ...

    @app.task("invoice.pay")
    def pay(amount: int) -> None: ...
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "filebroker.py").write_text(BROKER)
    (tmp_path / "web.py").write_text(APP)
    return tmp_path


def taskorbit(project: Path, *args: str) -> Proc:
    return Proc(list(args), project)


def published(project: Path) -> list[dict[str, object]]:
    path = project / "published.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_publish_prints_the_message_id_and_sends_through_the_app_transport(
    project: Path,
) -> None:
    cli = taskorbit(project, "publish", "web:app", "invoice.pay", "7", "--attribute", "src=ops")
    assert cli.finish() == 0, cli.output
    assert cli.lines == ["file-1"]
    assert published(project) == [
        {"topic": "invoice.pay", "body": "7", "attributes": {"src": "ops"}}
    ]


def test_publish_refuses_an_in_memory_app_with_how_to_configure_a_broker(project: Path) -> None:
    cli = taskorbit(project, "publish", "web:memory_app", "invoice.pay", "7")
    assert cli.finish() == 2
    [line] = cli.lines
    assert line.startswith(
        "taskorbit: web:memory_app uses the in-memory transport, which lives inside one "
        "process: a message published here would vanish when this command exits; "
        "configure a broker: a transport URL in the app"
    )
    assert "TASKORBIT_TRANSPORT in Flask's app.config" in line
    assert "TASKORBIT['TRANSPORT'] in Django's settings" in line


@pytest.mark.parametrize("action", [["list"], ["show", "1-0"], ["redrive", "--all"]])
def test_dlq_refuses_an_in_memory_app(project: Path, action: list[str]) -> None:
    cli = taskorbit(project, "dlq", action[0], "web:memory_app", *action[1:])
    assert cli.finish() == 2
    [line] = cli.lines
    assert "web:memory_app uses the in-memory transport" in line
    assert "its dead letters live inside the worker's process" in line
    assert "configure a broker" in line


def test_publish_to_a_misspelt_topic_warns_with_the_closest_names_and_still_publishes(
    project: Path,
) -> None:
    cli = taskorbit(project, "publish", "web:app", "welcome.sned", '{"email": "a@b.c"}')
    assert cli.finish() == 0, cli.output
    warning = (
        "taskorbit: topic 'welcome.sned' has no handler in web:app; did you mean "
        "'welcome.send' or 'welcome.resend'? Publishing it anyway, in case another "
        "service handles it."
    )
    assert sorted(cli.lines) == ["file-1", warning]  # stdout and stderr, in either order
    assert [m["topic"] for m in published(project)] == ["welcome.sned"]


def test_publish_to_a_topic_like_none_registered_lists_the_registered_ones(
    project: Path,
) -> None:
    cli = taskorbit(project, "publish", "web:app", "reports.nightly", "{}")
    assert cli.finish() == 0, cli.output
    assert (
        "taskorbit: topic 'reports.nightly' has no handler in web:app (its topics: "
        "invoice.pay, welcome.resend, welcome.send). Publishing it anyway" in cli.output
    )
    assert [m["topic"] for m in published(project)] == ["reports.nightly"]


def test_a_payload_the_handler_would_refuse_is_one_sentence_and_exit_2(project: Path) -> None:
    cli = taskorbit(project, "publish", "web:app", "welcome.send", '{"emial": "a@b.c"}')
    assert cli.finish() == 2
    [line] = cli.lines
    assert line.startswith("taskorbit: payload for 'welcome.send'"), line
    assert "email" in line
    assert published(project) == []


def test_publish_with_invalid_json_exits_2(project: Path) -> None:
    cli = taskorbit(project, "publish", "web:app", "invoice.pay", "{not json")
    assert cli.finish() == 2
    assert cli.lines[0].startswith("taskorbit: payload is not valid JSON")


@pytest.mark.parametrize("countdown", ["-1", "soon", "nan"])
def test_a_bad_countdown_exits_2(project: Path, countdown: str) -> None:
    cli = taskorbit(project, "publish", "web:app", "invoice.pay", "1", f"--countdown={countdown}")
    assert cli.finish() == 2
    assert cli.lines == [f"taskorbit: --countdown {countdown} is invalid: must be >= 0 seconds"]
