"""The settlement invariant on Redis Streams (issue 9): a broken envelope never takes
its receive batch down, a malformed entry reaches the DLQ as it was stored, a retry
reaches only the consumer group that handed it back, an entry trimmed while pending
is reported instead of vanishing, and attempts only grow."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from taskorbit.message import Message
from taskorbit.transports.redis.streams import EntryReceipt, RedisStreamsTransport
from tests.contract import new_message, receive_until
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

Make = Callable[..., RedisStreamsTransport]

ATTRS_NOT_OBJECT = "field 'attrs' is not a JSON object of strings"


def not_before_reason(value: str) -> str:
    return f"attribute 'taskorbit-not-before' is {value!r}, not epoch seconds"


BROKEN = [
    pytest.param(
        {"foo": "bar"},
        "field 'topic' is missing; field 'body' is missing",
        id="no-topic-or-body",
    ),
    pytest.param({"foo": "bar", "baz": "qux"}, "field 'topic' is missing", id="two-foreign-fields"),
    pytest.param({"topic": "t"}, "field 'body' is missing", id="no-body"),
    pytest.param({"body": "b"}, "field 'topic' is missing", id="no-topic"),
    pytest.param(
        {"topic": "t", "body": "b", "attrs": "{oops"}, ATTRS_NOT_OBJECT, id="attrs-not-json"
    ),
    pytest.param(
        {"topic": "t", "body": "b", "attrs": '["a"]'}, ATTRS_NOT_OBJECT, id="attrs-a-list"
    ),
    pytest.param(
        {"topic": "t", "body": "b", "attrs": '{"n": 1}'}, ATTRS_NOT_OBJECT, id="attrs-not-strings"
    ),
    *(
        pytest.param(
            {"topic": "t", "body": "b", "attempt": value},
            f"field 'attempt' is {value!r}, not a positive integer",
            id=f"attempt-{value}",
        )
        for value in ("abc", "0", "-2", "1.5", "")
    ),
    *(
        pytest.param(
            {"topic": "t", "body": "b", "attrs": f'{{"taskorbit-not-before": "{value}"}}'},
            not_before_reason(value),
            id=f"not-before-{value}",
        )
        for value in ("soon", "inf", "nan", "1e999")
    ),
    pytest.param(
        {"topic": b"\xff\xfe", "body": "b"}, "field 'topic' is not UTF-8", id="topic-bytes"
    ),
    pytest.param(
        {"topic": "t", "body": "b", "id": b"\xff"}, "field 'id' is not UTF-8", id="id-bytes"
    ),
]


def stored(raw: Any, stream: str) -> list[tuple[str, dict[bytes, bytes]]]:
    return [(i.decode(), fields) for i, fields in raw.xrange(stream)]


def as_bytes(fields: dict[str, str | bytes]) -> dict[bytes, bytes]:
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}


def pending(raw: Any, stream: str, group: str = "taskorbit") -> int:
    return int(raw.xpending(stream, group)["pending"])


# -- broken envelopes -----------------------------------------------------------


@pytest.mark.parametrize(("fields", "reason"), BROKEN)
def test_a_broken_entry_is_received_as_malformed_naming_the_field_between_intact_neighbours(
    make_streams: Make,
    raw_redis: Any,
    stream_name: str,
    fields: dict[str, str | bytes],
    reason: str,
) -> None:
    transport = make_streams()
    before, after = new_message(), new_message()
    transport.publish([before])
    broken_id = raw_redis.xadd(stream_name, fields).decode()
    transport.publish([after])
    got = receive_until(transport, 3)
    assert [m.body for m in (got[0], got[2])] == [before.body, after.body]
    assert [m.malformed for m in (got[0], got[2])] == [None, None]
    bad = got[1]
    assert bad.malformed is not None and bad.malformed.startswith(reason), bad.malformed
    assert (bad.receipt, bad.attempt) == (broken_id, 1)
    assert transport.ack([got[0], got[2]]) == []
    transport.dead_letter(bad, f"malformed envelope: {bad.malformed}")
    assert pending(raw_redis, stream_name) == 0
    [letter] = transport.dead_letters()
    assert letter.attributes["taskorbit-dlq-reason"] == f"malformed envelope: {bad.malformed}"


def test_a_broken_entry_claimed_from_a_dead_consumer_is_malformed_too(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    raw_redis.xgroup_create(stream_name, "taskorbit", id="0", mkstream=True)
    good = new_message()
    raw_redis.xadd(stream_name, {"topic": "t", "body": "b", "attempt": "abc"})
    make_streams().publish([good])
    # "dead" takes both and dies: recovery by XAUTOCLAIM reads the same broken entry.
    raw_redis.xreadgroup("taskorbit", "dead", {stream_name: ">"}, count=10)
    alive = make_streams(consumer="alive", lease_s=0.3)
    got = receive_until(alive, 2, timeout=5.0)
    assert sorted((m.malformed or "", m.body) for m in got) == [
        ("", good.body),
        ("field 'attempt' is 'abc', not a positive integer", b"b"),
    ]
    # The attempt of a malformed entry falls back to its delivery count.
    assert [m.attempt for m in got] == [2, 2]


def test_the_dead_letter_of_a_malformed_entry_keeps_its_fields_as_stored(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    transport = make_streams()
    fields: dict[str, str | bytes] = {
        "topic": b"\xffbad",
        "body": b"\x00\x01\x02",
        "attrs": "{oops",
        "attempt": "abc",
        "extra": "a producer's own field",
    }
    entry_id = raw_redis.xadd(stream_name, fields).decode()
    [bad] = receive_until(transport, 1)
    started = time.time()
    transport.dead_letter(bad, "malformed envelope")
    [(_, copy)] = stored(raw_redis, f"{stream_name}:dlq")
    kept = {k: v for k, v in copy.items() if not k.startswith(b"dlq-")}
    assert kept == {**as_bytes(fields), b"id": entry_id.encode()}
    assert copy[b"dlq-reason"] == b"malformed envelope"
    assert copy[b"dlq-attempts"] == b"1"
    assert copy[b"dlq-group"] == b"taskorbit"
    assert started <= float(copy[b"dlq-time"]) <= time.time()
    # Copied first, then removed from the stream.
    assert raw_redis.xlen(stream_name) == 0 and pending(raw_redis, stream_name) == 0
    [letter] = transport.dead_letters()
    assert (letter.id, letter.body) == (entry_id, b"\x00\x01\x02")
    assert letter.malformed is not None and "field 'attempt'" in letter.malformed


@pytest.mark.parametrize("delay", [0.0, 0.2], ids=["at-once", "delayed"])
def test_a_malformed_entry_handed_back_comes_back_as_it_was_stored(
    make_streams: Make, raw_redis: Any, stream_name: str, delay: float
) -> None:
    transport = make_streams()
    fields: dict[str, str | bytes] = {"topic": "t", "body": b"\xfe", "attrs": "[1]"}
    entry_id = raw_redis.xadd(stream_name, fields).decode()
    [bad] = receive_until(transport, 1)
    transport.nack([bad], delay=delay)  # a shutdown hand-back, say
    [again] = receive_until(transport, 1, timeout=5.0)
    assert again.malformed == bad.malformed
    assert isinstance(again.receipt, EntryReceipt)
    [(_, copy)] = stored(raw_redis, transport.retry_stream)
    assert copy == {**as_bytes(fields), b"id": entry_id.encode()}
    assert again.id == entry_id
    transport.dead_letter(again, "malformed envelope")
    assert raw_redis.xlen(transport.retry_stream) == 0
    [(_, letter)] = stored(raw_redis, f"{stream_name}:dlq")
    assert letter[b"attrs"] == b"[1]"


def test_a_foreign_member_of_the_delayed_set_is_received_as_malformed_and_moves_go_on(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    transport = make_streams()
    raw_redis.zadd(f"{stream_name}:delayed", {b"not a taskorbit member": time.time() - 1})
    sent = new_message()
    sent.not_before = time.time() + 0.2
    transport.publish([sent])
    got = receive_until(transport, 2, timeout=5.0)
    assert [m.body for m in got if m.malformed is None] == [sent.body]
    [bad] = [m for m in got if m.malformed is not None]
    assert "'unreadable'" in (bad.malformed or "")
    transport.dead_letter(bad, "malformed envelope")
    [(_, letter)] = stored(raw_redis, f"{stream_name}:dlq")
    assert letter[b"unreadable"] == b"not a taskorbit member"
    assert raw_redis.zcard(f"{stream_name}:delayed") == 0


# -- retries stay in their group --------------------------------------------------


def test_a_retry_with_two_groups_and_kept_entries_reaches_only_the_group_that_failed(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    a = make_streams(group="a", delete_acked=False)
    b = make_streams(group="b", delete_acked=False)
    sent = new_message()
    a.publish([sent])
    [mine] = receive_until(a, 1)
    [theirs] = receive_until(b, 1)
    assert b.ack([theirs]) == []
    mine.attempt += 1
    a.nack([mine])  # a retry at once: into a's retry stream
    [again] = receive_until(a, 1)
    assert receive_until(b, 1, timeout=1.0) == []  # b does not run it a second time
    assert (again.body, again.id, again.attempt) == (sent.body, mine.id, 2)
    again.attempt += 1
    a.nack([again], delay=0.2)  # a retry with a delay: a's delayed set
    assert raw_redis.zcard(f"{stream_name}:delayed:a") == 1
    assert raw_redis.zcard(f"{stream_name}:delayed") == 0
    [last] = receive_until(a, 1, timeout=5.0)
    assert (last.body, last.attempt) == (sent.body, 3)
    assert a.ack([last]) == []
    # The shared stream still holds the one published entry and no copy of it, so
    # b, which acked it, has nothing more to read; a's retries are gone once acked.
    assert [fields[b"body"] for _, fields in stored(raw_redis, stream_name)] == [sent.body]
    assert raw_redis.xlen(f"{stream_name}:retry:a") == 0
    assert not raw_redis.exists(f"{stream_name}:retry:b") or (
        raw_redis.xlen(f"{stream_name}:retry:b") == 0
    )
    assert receive_until(b, 1, timeout=1.0) == []
    assert pending(raw_redis, stream_name, "a") == pending(raw_redis, stream_name, "b") == 0


def test_a_consumer_reads_its_groups_retry_stream_after_a_restart(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    first = make_streams(consumer="first")
    first.publish([new_message()])
    [held] = receive_until(first, 1)
    held.attempt += 1
    first.nack([held])
    first.close()
    # Any consumer of the group, even one started later, picks the retry up.
    later = make_streams(consumer="later")
    [again] = receive_until(later, 1)
    assert (again.id, again.attempt) == (held.id, 2)
    later.ack([again])
    assert raw_redis.xlen(later.retry_stream) == 0


# -- entries trimmed while pending -------------------------------------------------


def test_entries_trimmed_while_pending_are_reported_and_reach_the_dlq_with_a_reason(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    dead = make_streams(consumer="dead", lease_s=0.3, delete_acked=False)
    dead.publish([new_message() for _ in range(150)])
    held = receive_until(dead, 150, batch=200)
    assert len(held) == 150
    # Another producer's approximate trimming drops whole stream nodes, pending or not.
    make_streams(maxlen=10).publish([new_message() for _ in range(300)])
    left = {i for i, _ in stored(raw_redis, stream_name)}
    trimmed = sorted(str(m.receipt) for m in held if m.receipt not in left)
    assert trimmed, "the test needs the trim to have dropped pending entries"
    alive = make_streams(consumer="alive", lease_s=0.3)
    reports: list[Message] = []

    def claimed_all() -> bool:
        reports.extend(m for m in alive.receive(500, 0.1) if m.malformed is not None)
        return len(reports) >= len(trimmed)

    wait_for(claimed_all, 10.0, "the reports of the trimmed entries")
    assert sorted(m.id for m in reports) == trimmed
    before = time.time()
    for m in reports:
        assert m.malformed == (
            f"entry {m.id} was trimmed from {stream_name} before it was acked; its content is lost"
        )
        assert (m.topic, m.body) == ("", b"")
        alive.dead_letter(m, f"malformed envelope: {m.malformed}")
    letters = {d.id: d for d in alive.dead_letters(count=1000)}
    assert sorted(letters) == trimmed
    for entry_id, letter in letters.items():
        assert "was trimmed" in letter.attributes["taskorbit-dlq-reason"]
        assert entry_id in letter.attributes["taskorbit-dlq-reason"]
        assert before <= float(letter.attributes["taskorbit-dlq-time"]) <= time.time()


def test_a_report_of_a_trimmed_entry_handed_back_is_dead_lettered_not_lost(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    dead = make_streams(consumer="dead", lease_s=0.3)
    dead.publish([new_message()])
    [held] = receive_until(dead, 1)
    raw_redis.xtrim(stream_name, maxlen=0, approximate=False)
    alive = make_streams(consumer="alive", lease_s=0.3)
    [report] = receive_until(alive, 1, timeout=5.0)
    alive.nack([report])  # a shutdown before it ran: there is nothing to hand back
    [letter] = alive.dead_letters()
    assert letter.id == held.receipt
    assert "was trimmed" in letter.attributes["taskorbit-dlq-reason"]


# -- attempts ----------------------------------------------------------------------


def test_attempts_only_grow_across_retry_stream_hops_delays_and_crashes(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    one = make_streams(consumer="one", lease_s=0.3)
    one.publish([new_message()])
    [m] = receive_until(one, 1)
    assert m.attempt == 1
    m.attempt += 1
    one.nack([m])  # a retry: attempt 2, through the retry stream
    [m] = receive_until(one, 1)
    assert (m.attempt, m.receipt.stream) == (2, one.retry_stream)
    one.nack([m])  # handed back without a run (shutdown): still attempt 2
    [m] = receive_until(one, 1)
    assert m.attempt == 2
    m.attempt += 1
    one.nack([m], delay=0.2)  # a retry with a delay: the group's delayed set
    [m] = receive_until(one, 1, timeout=5.0)
    assert m.attempt == 3
    # "one" dies holding it; claiming it from the retry stream counts a delivery.
    two = make_streams(consumer="two", lease_s=0.3)
    [m] = receive_until(two, 1, timeout=5.0)
    assert m.attempt == 4
    two.dead_letter(m, "gave up")
    assert two.dead_letters()[0].attributes["taskorbit-dlq-attempts"] == "4"
    assert raw_redis.xlen(two.retry_stream) == 0
    assert pending(raw_redis, stream_name) == pending(raw_redis, two.retry_stream) == 0


# -- one XREADGROUP, two streams ---------------------------------------------------


def test_receive_hands_over_no_more_than_asked_when_both_streams_have_entries(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    transport = make_streams(lease_s=5.0)
    first = [new_message() for _ in range(5)]
    transport.publish(first)
    held = receive_until(transport, 5)
    transport.nack(held)  # five in the retry stream ...
    second = [new_message() for _ in range(5)]
    transport.publish(second)  # ... and five in the shared stream
    seen: list[Message] = []

    def all_seen() -> bool:
        batch = transport.receive(4, timeout=0.2)
        assert len(batch) <= 4
        seen.extend(batch)
        return len(seen) >= 10

    wait_for(all_seen, 10.0, "both streams' entries")
    assert sorted(m.body for m in seen) == sorted(m.body for m in first + second)
    assert transport.ack(seen) == []
    assert pending(raw_redis, stream_name) == pending(raw_redis, transport.retry_stream) == 0


def test_close_hands_back_entries_read_beyond_what_receive_handed_over(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    leaving = make_streams(consumer="leaving", lease_s=30.0)
    leaving.publish([new_message() for _ in range(3)])
    leaving.nack(receive_until(leaving, 3))
    leaving.publish([new_message() for _ in range(3)])
    got = leaving.receive(3, timeout=1.0)  # one XREADGROUP finds both streams' entries
    assert len(got) == 3
    leaving.ack(got)
    # Three more were delivered to it (COUNT applies per stream) but not handed over.
    assert pending(raw_redis, stream_name) + pending(raw_redis, leaving.retry_stream) == 3
    leaving.close()
    assert pending(raw_redis, stream_name) + pending(raw_redis, leaving.retry_stream) == 0
    # What it read but never handed over is back at once, not after claim_idle_s.
    staying = make_streams(consumer="staying", lease_s=30.0)
    rest = receive_until(staying, 3, timeout=5.0)
    assert len({m.id for m in rest + got}) == 6
    assert [m.attempt for m in rest] == [1, 1, 1]


def test_entries_kept_back_so_long_that_another_consumer_claimed_them_are_not_handed_over(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    slow = make_streams(consumer="slow", lease_s=0.3)
    slow.publish([new_message() for _ in range(2)])
    slow.nack(receive_until(slow, 2))
    slow.publish([new_message() for _ in range(2)])
    got = slow.receive(2, timeout=1.0)  # two more are kept back for the next receive
    assert len(got) == 2
    slow.ack(got)
    # The ring stays full for longer than claim_idle_s: another consumer claims them.
    other = make_streams(consumer="other", lease_s=0.3)
    taken = receive_until(other, 2, timeout=5.0)
    assert len(taken) == 2
    assert slow.receive(2, timeout=0.1) == []
    assert other.ack(taken) == []
    assert pending(raw_redis, stream_name) + pending(raw_redis, slow.retry_stream) == 0
