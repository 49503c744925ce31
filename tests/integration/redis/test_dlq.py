"""The guide's flow on Redis Streams, through the real CLI: a message is
dead-lettered by a worker, listed, shown, redriven (dry run first), and handled."""

from __future__ import annotations

import json
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from taskorbit.dlq import Selection, for_transport
from taskorbit.errors import TransportError
from taskorbit.message import Message
from taskorbit.transports.redis.streams import RedisStreamsTransport
from tests.contract import receive_until
from tests.unit.cli.test_cli import Proc

APP = textwrap.dedent(
    """
    import os, sys
    import taskorbit as orbit
    from taskorbit.transports.redis.streams import RedisStreamsTransport

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


def test_a_failed_copy_leaves_the_dead_letter_in_place(redis_url: str) -> None:
    import redis

    transport = RedisStreamsTransport(redis_url, stream="jobs")
    raw = redis.Redis.from_url(redis_url)
    try:
        transport.publish([Message("job", b"1")])
        [received] = transport.receive(1, 1.0)
        transport.dead_letter(received, "broken")
        # The group's retry stream, where the copy goes, is not a stream: XADD fails.
        raw.delete(transport.retry_stream)
        raw.set(transport.retry_stream, "not a stream")
        dlq = for_transport(transport)
        with pytest.raises(TransportError):
            dlq.redrive(Selection())
        assert [x.reason for x in dlq.list()] == ["broken"]
    finally:
        raw.close()
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


@pytest.fixture
def raw(redis_url: str) -> Any:
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_malformed_and_trimmed_letters_are_listed_shown_redriven_and_purged_through_the_cli(
    project: Path, redis_url: str, raw: Any
) -> None:
    transport = RedisStreamsTransport(redis_url, stream="orders", lease_s=0.3)
    try:
        # An entry trimmed while a consumer that then died held it ...
        raw.xgroup_create("orders", "taskorbit", id="0", mkstream=True)
        transport.publish([Message("charge", b'{"amount": 1}')])
        raw.xreadgroup("taskorbit", "dead", {"orders": ">"}, count=1)
        raw.xtrim("orders", maxlen=0, approximate=False)
        # ... and two entries a foreign producer wrote.
        fixable = raw.xadd("orders", {"topic": "charge", "body": '{"amount": 3}', "attempt": "x"})
        raw.xadd("orders", {"topic": b"\xff", "body": b"\xfe\x00"})
        got = receive_until(transport, 3, timeout=5.0)
        assert all(m.malformed for m in got), [m.malformed for m in got]
        for m in got:
            transport.dead_letter(m, f"malformed envelope: {m.malformed}")
    finally:
        transport.close()

    listed = cli(project, redis_url, "dlq", "list", "shop:app", "--json")
    assert listed.finish() == 0, listed.output
    rows = {row["id"]: row for row in map(json.loads, listed.lines)}
    assert len(rows) == 3
    assert all(row["reason"].startswith("malformed envelope: ") for row in rows.values())
    assert rows[fixable.decode()]["topic"] == "charge"
    [binary] = [row for row in rows.values() if "'topic' is not UTF-8" in row["reason"]]
    [lost] = [row for row in rows.values() if "was trimmed" in row["reason"]]

    shown = cli(project, redis_url, "dlq", "show", "shop:app", binary["id"])
    assert shown.finish() == 0, shown.output
    assert json.loads(shown.output)["body_hex"] == "fe00"

    # The two with content go back to the group; the report of the trimmed entry has
    # nothing to redrive and stays until purged.
    redrive = cli(project, redis_url, "dlq", "redrive", "shop:app", "--all")
    assert redrive.finish() == 0, redrive.output
    assert "2 dead letters redriven" in redrive.output
    back = {fields.get(b"id"): fields for _, fields in raw.xrange("orders:retry:taskorbit")}
    assert back[fixable] == {b"topic": b"charge", b"body": b'{"amount": 3}', b"id": fixable}
    still = cli(project, redis_url, "dlq", "list", "shop:app", "--json")
    assert still.finish() == 0
    assert [json.loads(line)["id"] for line in still.lines] == [lost["id"]]

    purge = cli(project, redis_url, "dlq", "purge", "shop:app", "--all")
    assert purge.finish() == 0, purge.output
    assert "1 dead letters purged" in purge.output
    assert raw.xlen("orders:dlq") == 0


def test_a_redriven_letter_goes_back_only_to_the_group_that_dead_lettered_it(
    redis_url: str,
) -> None:
    a = RedisStreamsTransport(redis_url, stream="news", group="a", delete_acked=False)
    b = RedisStreamsTransport(redis_url, stream="news", group="b", delete_acked=False)
    try:
        a.publish([Message("item", b"1")])
        [mine] = receive_until(a, 1)
        [theirs] = receive_until(b, 1)
        assert b.ack([theirs]) == []
        a.dead_letter(mine, "broken")
        # Redriven from any transport on the stream, the letter knows its group.
        assert [x.reason for x in for_transport(b).redrive(Selection())] == ["broken"]
        [again] = receive_until(a, 1)
        assert (again.body, again.attempt) == (b"1", 1)
        assert a.ack([again]) == []
        assert receive_until(b, 1, timeout=1.0) == []
    finally:
        a.close()
        b.close()


def test_foreign_entries_in_the_dead_letter_stream_are_listed_and_shown_without_crashing(
    redis_url: str, raw: Any
) -> None:
    transport = RedisStreamsTransport(redis_url, stream="odd")
    try:
        raw.xadd("odd:dlq", {"dlq-attempts": "many", "dlq-time": "soon", "topic": b"\xff"})
        raw.xadd("odd:dlq", {"dlq-time": "inf", "foo": "bar", "dlq-reason": b"\xfe"})
        raw.xadd("odd:dlq", {"topic": "t", "body": "b", "dlq-time": str(time.time())})
        dlq = for_transport(transport)
        letters = dlq.list()
        assert [(x.attempts, x.time is None) for x in letters] == [(0, True), (0, True), (0, False)]
        assert [x.when for x in letters][:2] == ["-", "-"]
        assert dlq.show(letters[1].id) is not None
    finally:
        transport.close()
