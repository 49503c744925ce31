"""The guide's flow on Redis Streams, through the real CLI: a message is
dead-lettered by a worker, listed, shown, redriven (dry run first), and handled."""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path

import pytest

from taskorbit.dlq import Selection, for_transport
from taskorbit.errors import TransportError
from taskorbit.message import Message
from taskorbit.transports.redis_streams import RedisStreamsTransport
from tests.unit.test_cli import Proc

APP = textwrap.dedent(
    """
    import os, sys
    import taskorbit as orbit
    from taskorbit.transports.redis_streams import RedisStreamsTransport

    app = orbit.Orbit(RedisStreamsTransport(os.environ["REDIS_URL"], stream="orders"),
                      poll_timeout=0.2)

    @app.task("charge")
    def charge(payload: dict) -> orbit.Result | None:
        if payload["amount"] < 0 and not os.environ.get("ALLOW_NEGATIVE"):
            return orbit.dead_letter(f"negative amount {payload['amount']}")
        sys.stdout.write(f"charged {payload['amount']}\\n"); sys.stdout.flush()
        return None
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "shop.py").write_text(APP)
    return tmp_path


def cli(project: Path, url: str, *args: str, **env: str) -> Proc:
    return Proc(list(args), project, {"REDIS_URL": url, **env})


def test_dead_letter_list_show_redrive_and_handle_through_the_cli(
    project: Path, redis_url: str
) -> None:
    published = cli(project, redis_url, "publish", "shop:app", "charge", '{"amount": -5}')
    assert published.finish() == 0

    worker = cli(project, redis_url, "worker", "shop:app", "--status-interval", "0.2")
    try:
        worker.wait_for(r"dead 1 \|")
        worker.signal(signal.SIGTERM)
        assert worker.finish() == 0
    finally:
        worker.kill()

    listed = cli(project, redis_url, "dlq", "list", "shop:app", "--json")
    assert listed.finish() == 0
    [row] = [json.loads(line) for line in listed.lines]
    assert row["topic"] == "charge" and row["attempts"] == 1
    assert row["reason"] == "negative amount -5"

    shown = cli(project, redis_url, "dlq", "show", "shop:app", row["id"])
    assert shown.finish() == 0
    assert json.loads(shown.output)["body"] == '{"amount":-5}'

    dry = cli(project, redis_url, "dlq", "redrive", "shop:app", "--reason", "negative", "--dry-run")
    assert dry.finish() == 0
    assert "1 dead letters would be redriven" in dry.output
    still = cli(project, redis_url, "dlq", "list", "shop:app", "--json")
    assert still.finish() == 0 and len(still.lines) == 1

    redrive = cli(project, redis_url, "dlq", "redrive", "shop:app", "--topic", "charge")
    assert redrive.finish() == 0
    assert "1 dead letters redriven" in redrive.output
    empty = cli(project, redis_url, "dlq", "list", "shop:app", "--json")
    assert empty.finish() == 0 and empty.lines == []

    fixed = cli(project, redis_url, "worker", "shop:app", ALLOW_NEGATIVE="1")
    try:
        fixed.wait_for("charged -5")
        fixed.signal(signal.SIGTERM)
        assert fixed.finish() == 0
    finally:
        fixed.kill()


def test_a_failed_copy_leaves_the_dead_letter_in_place(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = RedisStreamsTransport(redis_url, stream="jobs")
    try:
        transport.publish([Message("job", b"1")])
        [received] = transport.receive(1, 1.0)
        transport.dead_letter(received, "broken")

        def broker_down(messages: object) -> list[str]:
            raise TransportError("broker unreachable")

        monkeypatch.setattr(transport, "publish", broker_down)
        dlq = for_transport(transport)
        with pytest.raises(TransportError):
            dlq.redrive(Selection())
        assert [x.reason for x in dlq.list()] == ["broken"]
    finally:
        transport.close()


def test_purge_by_id_deletes_that_entry_only(redis_url: str) -> None:
    transport = RedisStreamsTransport(redis_url, stream="jobs")
    try:
        transport.publish([Message("job", b"1"), Message("job", b"2")])
        for received in transport.receive(2, 1.0):
            transport.dead_letter(received, f"bad {received.body.decode()}")
        dlq = for_transport(transport)
        first = dlq.list(selection=Selection.of(reason="bad 1"))[0]
        assert [x.id for x in dlq.purge(Selection.of([first.id]))] == [first.id]
        assert [x.reason for x in dlq.list()] == ["bad 2"]
    finally:
        transport.close()
