"""Redis Streams behaviour beyond the shared contract: crash recovery, the delayed
set, leases between consumers, trimming and connection loss."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from taskorbit.errors import ConfigurationError
from taskorbit.message import Message
from taskorbit.transports.redis.streams import RedisStreamsTransport
from tests.contract import new_message, receive_until
from tests.servers import free_port

pytestmark = pytest.mark.integration

Make = Callable[..., RedisStreamsTransport]


def pending_by_consumer(raw: Any, stream: str, group: str = "taskorbit") -> dict[str, int]:
    summary = raw.xpending(stream, group)
    return {c["name"].decode(): int(c["pending"]) for c in summary["consumers"]}


def test_entries_of_a_dead_consumer_are_claimed_and_processed_with_a_larger_attempt(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    dead = make_streams(consumer="dead", lease_s=0.5)
    sent = [new_message() for _ in range(3)]
    dead.publish(sent)
    held = receive_until(dead, 3)
    assert [m.attempt for m in held] == [1, 1, 1]
    # "dead" never acks; a new consumer finds its entries once they are idle.
    alive = make_streams(consumer="alive", lease_s=0.5)
    claimed = receive_until(alive, 3, timeout=5.0)
    assert sorted(m.body for m in claimed) == sorted(m.body for m in sent)
    assert [m.attempt for m in claimed] == [2, 2, 2]
    assert [m.id for m in claimed] == [m.id for m in held]
    # Claimed, not acked: they stay pending (now with "alive") until processed.
    assert pending_by_consumer(raw_redis, stream_name) == {"alive": 3}
    alive.ack(claimed)
    assert raw_redis.xpending(stream_name, "taskorbit")["pending"] == 0


def test_a_restarted_consumer_claims_its_own_entries_from_its_previous_life(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    first_life = make_streams(consumer="worker-1", lease_s=0.5)
    first_life.publish([new_message()])
    receive_until(first_life, 1)
    second_life = make_streams(consumer="worker-1", lease_s=0.5)
    again = receive_until(second_life, 1, timeout=5.0)
    assert len(again) == 1 and again[0].attempt == 2
    second_life.ack(again)
    assert raw_redis.xpending(stream_name, "taskorbit")["pending"] == 0


def test_attempts_add_up_across_nacks_and_crashes(make_streams: Make) -> None:
    crashing = make_streams(consumer="crashing", lease_s=0.5)
    crashing.publish([new_message()])
    first = receive_until(crashing, 1)
    first[0].attempt += 1  # the runtime's retry: attempt 2 is carried in the copy
    crashing.nack(first, delay=0.0)
    second = receive_until(crashing, 1)
    assert second[0].attempt == 2
    # This consumer dies holding it; the claim counts as one more delivery.
    survivor = make_streams(consumer="survivor", lease_s=0.5)
    third = receive_until(survivor, 1, timeout=5.0)
    assert third[0].attempt == 3
    survivor.dead_letter(third[0], "gave up")
    assert survivor.dead_letters()[0].attributes["taskorbit-dlq-attempts"] == "3"


def test_extend_keeps_held_entries_from_other_consumers(make_streams: Make) -> None:
    holder = make_streams(consumer="holder", lease_s=1.0)
    other = make_streams(consumer="other", lease_s=1.0)
    holder.publish([new_message()])
    held = receive_until(holder, 1)
    until = time.monotonic() + 1.0 * 3
    while time.monotonic() < until:
        holder.extend(held, 1.0)
        assert other.receive(10, timeout=0.2) == []
    # Without extends the lease runs out and the other consumer takes over.
    taken = receive_until(other, 1, timeout=5.0)
    assert [m.id for m in taken] == [m.id for m in held]


def test_extend_does_not_take_back_an_entry_another_consumer_claimed(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    slow = make_streams(consumer="slow", lease_s=0.3)
    fast = make_streams(consumer="fast", lease_s=0.3)
    slow.publish([new_message()])
    held = receive_until(slow, 1)
    receive_until(fast, 1, timeout=5.0)  # slow's lease ran out: fast owns it now
    slow.extend(held, 0.3)
    assert pending_by_consumer(raw_redis, stream_name) == {"fast": 1}


def test_nack_with_delay_parks_the_message_in_the_groups_delayed_set_until_due(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    transport = make_streams()
    transport.publish([new_message()])
    got = receive_until(transport, 1)
    transport.nack(got, delay=30.0)
    assert raw_redis.zcard(f"{stream_name}:delayed:taskorbit") == 1
    assert raw_redis.zcard(f"{stream_name}:delayed") == 0  # the shared set: ETAs only
    assert raw_redis.xpending(stream_name, "taskorbit")["pending"] == 0
    assert raw_redis.xlen(stream_name) == 0  # acked and deleted


def test_any_worker_moves_due_delayed_messages_into_the_stream(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    producer = make_streams()
    sent = new_message()
    sent.not_before = time.time() + 0.5
    [message_id] = producer.publish([sent])
    assert raw_redis.zcard(f"{stream_name}:delayed") == 1
    # A worker started later (after a restart, say) finds it and moves it.
    worker = make_streams(consumer="later")
    got = receive_until(worker, 1, timeout=5.0)
    assert [(m.body, m.id) for m in got] == [(sent.body, message_id)]
    assert raw_redis.zcard(f"{stream_name}:delayed") == 0


def test_many_due_messages_are_moved_in_chunks_without_loss(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    transport = make_streams()
    sent = [new_message() for _ in range(1200)]
    for m in sent:
        m.not_before = time.time() + 0.2
    transport.publish(sent)
    got = receive_until(transport, 1200, timeout=10.0, batch=1000)
    assert sorted(m.body for m in got) == sorted(m.body for m in sent)
    assert raw_redis.zcard(f"{stream_name}:delayed") == 0


def test_a_late_nack_of_an_entry_someone_else_acked_adds_no_duplicate(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    slow = make_streams(consumer="slow", lease_s=0.3)
    fast = make_streams(consumer="fast", lease_s=0.3)
    slow.publish([new_message()])
    held = receive_until(slow, 1)
    fast.ack(receive_until(fast, 1, timeout=5.0))
    slow.nack(held, delay=0.0)
    slow.dead_letter(held[0], "too late")
    assert raw_redis.xlen(stream_name) == 0
    assert raw_redis.xlen(f"{stream_name}:retry:taskorbit") == 0
    assert slow.dead_letters() == []


def test_acked_entries_stay_in_the_stream_when_delete_acked_is_off(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    transport = make_streams(delete_acked=False)
    transport.publish([new_message() for _ in range(3)])
    transport.ack(receive_until(transport, 3))
    assert raw_redis.xlen(stream_name) == 3
    assert raw_redis.xpending(stream_name, "taskorbit")["pending"] == 0


def test_maxlen_trims_the_stream_approximately(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    transport = make_streams(maxlen=100)
    sent = [new_message() for _ in range(1000)]
    for start in range(0, 1000, 100):
        transport.publish(sent[start : start + 100])
    kept = [fields[b"body"] for _, fields in raw_redis.xrange(stream_name)]
    # "~" trimming removes whole stream nodes (at most 100 entries each, Redis's
    # default stream-node-max-entries; fewer when 4 KiB fill first): never fewer
    # than maxlen are kept, and less than one node more. Where in that range it
    # ends depends on how the entries fell into nodes, so it is a range.
    assert 100 <= len(kept) < 200
    assert kept == [m.body for m in sent][-len(kept) :]  # the oldest went


def test_the_consumer_group_is_recreated_after_the_data_is_flushed(
    make_streams: Make, raw_redis: Any
) -> None:
    transport = make_streams()
    transport.publish([new_message()])
    transport.ack(receive_until(transport, 1))
    raw_redis.flushall()
    sent = new_message()
    transport.publish([sent])
    got = receive_until(transport, 1, timeout=5.0)
    assert [m.body for m in got] == [sent.body]


def test_receive_survives_its_connections_being_killed(make_streams: Make, raw_redis: Any) -> None:
    transport = make_streams()
    transport.publish([new_message()])
    transport.ack(receive_until(transport, 1))
    raw_redis.client_kill_filter(_type="normal", skipme=True)
    sent = new_message()
    transport.publish([sent])
    got = receive_until(transport, 1, timeout=5.0)
    assert [m.body for m in got] == [sent.body]
    assert transport.ack(got) == []


def test_receive_from_an_unreachable_server_logs_and_returns_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = RedisStreamsTransport(url=f"redis://127.0.0.1:{free_port()}/0")
    with caplog.at_level(logging.WARNING, logger="taskorbit.redis"):
        assert transport.receive(10, timeout=0.2) == []
        assert transport.receive(10, timeout=0.2) == []
    warnings = [r for r in caplog.records if "lost its Redis connection" in r.getMessage()]
    assert len(warnings) == 1


def test_messages_keep_ids_ordering_keys_and_binary_bodies(make_streams: Make) -> None:
    transport = make_streams()
    sent = Message(topic="t", body=bytes(range(256)), id="order-1", ordering_key="k")
    assert transport.publish([sent]) == ["order-1"]
    got = receive_until(transport, 1)
    assert (got[0].body, got[0].id, got[0].ordering_key) == (sent.body, "order-1", "k")


def test_claim_idle_shorter_than_the_lease_is_refused(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="claim_idle_s"):
        RedisStreamsTransport(url=redis_url, lease_s=10, claim_idle_s=5)


def test_a_transport_without_url_or_client_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="exactly one"):
        RedisStreamsTransport()


def test_a_client_that_decodes_responses_is_refused(redis_url: str) -> None:
    import redis

    with pytest.raises(ConfigurationError, match="decode_responses=False"):
        RedisStreamsTransport(client=redis.Redis.from_url(redis_url, decode_responses=True))


def test_a_client_passed_in_stays_open_after_close(redis_url: str, stream_name: str) -> None:
    import redis

    class RecordingRedis(redis.Redis):
        closed = False

        def close(self) -> None:
            self.closed = True
            super().close()

    client = RecordingRedis.from_url(redis_url)
    assert isinstance(client, RecordingRedis)
    transport = RedisStreamsTransport(client=client, stream=stream_name)
    transport.close()
    assert not client.closed
    owned = RedisStreamsTransport(url=redis_url, stream=stream_name)
    owned.client.__class__ = RecordingRedis
    owned.close()
    assert owned.client.closed  # type: ignore[attr-defined]


def test_entries_whose_delivery_reply_was_lost_come_back_to_the_same_consumer(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    raw_redis.xgroup_create(stream_name, "taskorbit", id="0", mkstream=True)
    transport = make_streams(consumer="flaky", lease_s=0.5)
    sent = new_message()
    transport.publish([sent])
    # Redis delivers to "flaky" but the reply never reaches it (a dropped connection).
    raw_redis.xreadgroup("taskorbit", "flaky", {stream_name: ">"}, count=10)
    got = receive_until(transport, 1, timeout=5.0)
    assert [m.body for m in got] == [sent.body]
    assert got[0].attempt == 2


def test_idle_claims_after_a_flush_recreate_the_group_too(
    make_streams: Make, raw_redis: Any
) -> None:
    transport = make_streams(claim_interval_s=0.01)
    transport.receive(1, timeout=0.05)
    raw_redis.flushall()
    # Letting claim_interval_s pass is the point: the next receive starts with an
    # idle claim, which must recreate the flushed group too.
    time.sleep(0.02)
    assert transport.receive(1, timeout=0.05) == []
    sent = new_message()
    transport.publish([sent])
    assert [m.body for m in receive_until(transport, 1, timeout=5.0)] == [sent.body]


def test_max_age_trims_entries_older_than_it(
    make_streams: Make, raw_redis: Any, stream_name: str
) -> None:
    old = make_streams(delete_acked=False)
    sent = [new_message() for _ in range(300)]
    old.publish(sent)
    assert raw_redis.xlen(stream_name) == 300
    time.sleep(0.3)  # letting the entries grow older than max_age_s is the point
    trimming = make_streams(max_age_s=0.2)
    newest = new_message()
    trimming.publish([newest])
    kept = [fields[b"body"] for _, fields in raw_redis.xrange(stream_name)]
    # "~" trimming removes whole stream nodes (at most 100 entries each by default):
    # every node older than 0.2 s is gone, so what is left of the old entries shares
    # the new entry's node. How many that is depends on where the nodes split.
    assert kept[-1] == newest.body
    assert len(kept) <= 100
    assert kept[:-1] == [m.body for m in sent][len(sent) - (len(kept) - 1) :]


def test_trimming_by_length_and_by_age_together_is_refused(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        RedisStreamsTransport(url=redis_url, maxlen=10, max_age_s=60)


def test_plain_and_rich_messages_round_trip_whichever_publish_path_they_take(
    make_streams: Make,
) -> None:
    transport = make_streams()
    # A batch of bodies only (the short path), then a batch mixing attributes, ids,
    # ordering keys and a second topic (the general path).
    plain = [Message(topic="t", body=f"p{i}".encode()) for i in range(3)]
    mixed = [
        Message(topic="t", body=b"m0"),
        Message(topic="t", body=b"m1", attributes={"color": "red"}),
        Message(topic="t", body=b"m2", id="custom-id"),
        Message(topic="t", body=b"m3", ordering_key="k"),
        Message(topic="other", body=b"m4"),
    ]
    transport.publish(plain)
    transport.publish(mixed)
    got = {m.body: m for m in receive_until(transport, 8)}
    assert sorted(got) == sorted(m.body for m in plain + mixed)
    assert all(got[m.body].topic == "t" and got[m.body].attributes == {} for m in plain)
    assert all(got[m.body].attempt == 1 for m in plain + mixed)
    assert got[b"m1"].attributes == {"color": "red"}
    assert got[b"m2"].id == "custom-id"
    assert got[b"m3"].ordering_key == "k"
    assert got[b"m4"].topic == "other"
