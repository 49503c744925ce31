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

from taskorbit.dlq import REDRIVEN_FROM_ATTR, Selection, for_transport
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
    assert "1 dead letter would be redriven" in dry.output
    still = cli(project, redis_url, "dlq", "list", "shop:app", "--json")
    assert still.finish() == 0 and len(still.lines) == 1

    redrive = cli(project, redis_url, "dlq", "redrive", "shop:app", "--topic", "charge")
    assert redrive.finish() == 0
    assert "1 dead letter redriven" in redrive.output
    [move] = [line for line in redrive.lines if " → " in line]
    assert move.startswith(f"{row['id']} → ")
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
    moved = dict(line.split(" → ") for line in redrive.lines if " → " in line)
    assert set(moved) == {fixable.decode(), binary["id"]}
    back = dict(raw.xrange("orders:retry:taskorbit"))
    # As stored, but a new message: a new id, and the dead letter's id in its attrs.
    copy = back[moved[fixable.decode()].encode()]
    assert json.loads(copy.pop(b"attrs")) == {REDRIVEN_FROM_ATTR: fixable.decode()}
    assert copy == {b"topic": b"charge", b"body": b'{"amount": 3}'}
    assert back[moved[binary["id"]].encode()][b"topic"] == b"\xff"  # byte for byte
    still = cli(project, redis_url, "dlq", "list", "shop:app", "--json")
    assert still.finish() == 0
    assert [json.loads(line)["id"] for line in still.lines] == [lost["id"]]

    purge = cli(project, redis_url, "dlq", "purge", "shop:app", "--all")
    assert purge.finish() == 0, purge.output
    assert "1 dead letter purged" in purge.output
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


def dead_letter_three(redis_url: str, reason_of: dict[bytes, str] | None = None) -> list[str]:
    """Publish three charges with attributes, dead-letter them; their DLQ ids."""
    transport = RedisStreamsTransport(redis_url, stream="orders")
    try:
        transport.publish([Message("charge", b, {"customer": "c1"}) for b in (b"1", b"2", b"3")])
        for m in receive_until(transport, 3):
            transport.dead_letter(m, (reason_of or {}).get(m.body, f"bad {m.body.decode()}"))
        return [x.id for x in for_transport(transport).list()]
    finally:
        transport.close()


def test_redrive_prints_old_to_new_and_each_copy_names_the_letter_it_came_from(
    project: Path, redis_url: str
) -> None:
    ids = dead_letter_three(redis_url)

    redrive = cli(project, redis_url, "dlq", "redrive", "shop:app", ids[0], ids[2])
    assert redrive.finish() == 0, redrive.output
    moves = [line.split(" → ") for line in redrive.lines if " → " in line]
    assert [old for old, _ in moves] == [ids[0], ids[2]]
    assert "2 dead letters redriven" in redrive.lines

    transport = RedisStreamsTransport(redis_url, stream="orders")
    try:
        back = {m.id: m for m in receive_until(transport, 2)}
        assert set(back) == {new for _, new in moves}  # the id the worker sees is the new one
        for old, new in moves:
            assert back[new].attributes == {"customer": "c1", REDRIVEN_FROM_ATTR: old}
            assert back[new].attempt == 1
        assert [x.id for x in for_transport(transport).list()] == [ids[1]]
    finally:
        transport.close()


def test_redrive_as_json_carries_the_new_id(project: Path, redis_url: str) -> None:
    [first, *_] = dead_letter_three(redis_url)
    redrive = cli(project, redis_url, "dlq", "redrive", "shop:app", first, "--json")
    assert redrive.finish() == 0, redrive.output
    [row] = [json.loads(line) for line in redrive.lines if line.startswith("{")]
    assert row["id"] == first and row["redriven_as"] not in ("", None, first)
    assert "1 dead letter redriven" in redrive.lines


def stderr(run: Proc) -> list[str]:
    """The summary lines, which go to stderr (Proc interleaves both streams)."""
    return [line for line in run.lines if " dead letter" in line and "→" not in line]


@pytest.mark.parametrize("action", ["redrive", "purge"])
def test_ids_that_match_no_dead_letter_exit_1_naming_them_after_acting_on_the_rest(
    project: Path, redis_url: str, action: str
) -> None:
    ids = dead_letter_three(redis_url)
    run = cli(project, redis_url, "dlq", action, "shop:app", ids[1], "0-1", "9-9")
    assert run.finish() == 1
    verb = "redriven" if action == "redrive" else "purged"
    assert stderr(run) == [
        f"1 dead letter {verb}",
        "taskorbit: no dead letter with ids '0-1', '9-9'",
    ]

    left = cli(project, redis_url, "dlq", "list", "shop:app", "--json")
    assert left.finish() == 0
    assert [json.loads(line)["id"] for line in left.lines] == [ids[0], ids[2]]

    only_missing = cli(project, redis_url, "dlq", action, "shop:app", "0-1", "--topic", "charge")
    assert only_missing.finish() == 1
    assert stderr(only_missing) == [
        f"0 dead letters {verb}",
        "taskorbit: no dead letter matching --topic/--reason with id '0-1'",
    ]


def test_list_shortens_long_reasons_and_wide_shows_them_whole(
    project: Path, redis_url: str
) -> None:
    long_reason = "upstream refused the charge: " + "card declined by issuer; " * 4
    dead_letter_three(redis_url, {b"2": long_reason})

    table = cli(project, redis_url, "dlq", "list", "shop:app")
    assert table.finish() == 0
    [row] = [line for line in table.lines if "upstream" in line]
    assert row.endswith(long_reason[:57] + "...")
    assert "(reasons shortened; --wide shows them in full)" in table.lines

    wide = cli(project, redis_url, "dlq", "list", "shop:app", "--wide")
    assert wide.finish() == 0
    [row] = [line for line in wide.lines if "upstream" in line]
    assert row.endswith(long_reason)
    assert "(reasons shortened; --wide shows them in full)" not in wide.lines


def test_redrive_without_a_selection_refuses_and_exits_2(project: Path, redis_url: str) -> None:
    run = cli(project, redis_url, "dlq", "redrive", "shop:app")
    assert run.finish() == 2
    assert run.lines == [
        "taskorbit: dlq redrive needs ids, --topic, --reason or --all (to take every one)"
    ]


def test_redriven_attrs_gain_the_link_unless_they_are_not_a_json_object(
    redis_url: str, raw: Any
) -> None:
    transport = RedisStreamsTransport(redis_url, stream="odd")
    try:
        for attrs in ('{"customer": "c/1"}', "not json", '["a"]'):
            raw.xadd("odd:dlq", {"topic": "t", "body": "b", "attrs": attrs, "dlq-reason": "x"})
        letters = for_transport(transport).redrive(Selection(), dry_run=False)
        assert len(letters) == 3 and all(x.redriven_as for x in letters)
        copies = dict(raw.xrange("odd"))
        got = [copies[x.redriven_as.encode()][b"attrs"] for x in letters]  # type: ignore[union-attr]
        assert json.loads(got[0]) == {"customer": "c/1", REDRIVEN_FROM_ATTR: letters[0].id}
        assert got[1:] == [b"not json", b'["a"]']  # malformed: back as they were
    finally:
        transport.close()
