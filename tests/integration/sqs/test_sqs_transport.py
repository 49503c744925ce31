"""SQS-specific behaviour of SQSTransport, against moto_server: partial batch
failures, long delays, both dead-letter routes, FIFO groups, and the limits."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from taskorbit.errors import (
    ConfigurationError,
    PayloadTooLargeError,
    TransportConnectionError,
)
from taskorbit.message import DLQ_ATTEMPTS_ATTR, DLQ_REASON_ATTR, Message
from taskorbit.transports.sqs import SQSTransport
from taskorbit.transports.sqs.wire import Receipt
from tests.contract import receive_until
from tests.servers import free_port
from tests.servers.sqs import SQSFixture

pytestmark = pytest.mark.integration

MakeTransport = Callable[..., SQSTransport]


def message(topic: str = "t", body: bytes | None = None, **attributes: str) -> Message:
    return Message(topic=topic, body=body or uuid.uuid4().hex.encode(), attributes=attributes)


def count_calls(transport: SQSTransport) -> dict[str, int]:
    """Count the SQS API calls the transport's client makes, by operation name."""
    calls: dict[str, int] = {}

    def count(model: object, **_: object) -> None:
        name = getattr(model, "name", "?")
        calls[name] = calls.get(name, 0) + 1

    transport._client.meta.events.register("before-call.sqs.*", count)
    return calls


def run_like_the_runtime(transport: SQSTransport, seconds: float) -> list[tuple[Message, float]]:
    """Receive for ``seconds``, re-delaying what is not yet due the way the runtime
    does, and return what was due with the wall-clock time it arrived."""
    due: list[tuple[Message, float]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for m in transport.receive(10, timeout=1.0):
            now = time.time()
            if m.not_before is not None and m.not_before > now:
                transport.nack([m], delay=m.not_before - now)
            else:
                due.append((m, now))
                transport.ack([m])
    return due


# -- ack -----------------------------------------------------------------------


def test_partial_delete_failure_is_reported_and_the_good_ones_are_deleted(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    transport = make_transport(sqs.create_queue("partial"))
    transport.publish([message() for _ in range(3)])
    got = receive_until(transport, 3)
    stale = Message(topic="t", body=b"x", id="stale", receipt=Receipt("not-a-receipt-handle", 2))

    failures = transport.ack([got[0], stale, got[1], got[2]])

    assert [f.message for f in failures] == [stale]
    assert "ReceiptHandleIsInvalid" in failures[0].reason
    assert failures[0].retryable is False
    assert receive_until(transport, 1, timeout=transport.lease_s + 1.0) == []


def test_ack_of_more_than_ten_messages_uses_batches_of_ten(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    transport = make_transport(sqs.create_queue("ack-batches"))
    transport.publish([message() for _ in range(23)])
    got = receive_until(transport, 23)
    calls = count_calls(transport)
    assert transport.ack(got) == []
    assert calls == {"DeleteMessageBatch": 3}


# -- delays --------------------------------------------------------------------


def test_retry_longer_than_the_native_limit_is_delivered_once_at_the_right_time(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    # Scaled down: SQS carries 12 h natively; here 2 s, and the delay is 5 s.
    transport = make_transport(sqs.create_queue("long-retry"), max_delay_native=2.0)
    sent = message()
    transport.publish([sent])
    first = receive_until(transport, 1)
    nacked_at = time.time()

    first[0].attempt += 1  # a retry, as the runtime hands it back
    transport.nack(first, delay=5.0)

    due = run_like_the_runtime(transport, 9.0)
    assert [m.body for m, _ in due] == [sent.body]
    arrived = due[0][1] - nacked_at
    assert 5.0 <= arrived < 8.0
    assert due[0][0].attempt == 2


def test_eta_longer_than_the_native_limit_arrives_on_time_on_its_first_attempt(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    transport = make_transport(sqs.create_queue("long-eta"), max_delay_native=2.0)
    sent = message()
    sent.not_before = time.time() + 5.0
    transport.publish([sent])

    due = run_like_the_runtime(transport, 9.0)

    assert [m.body for m, _ in due] == [sent.body]
    assert due[0][1] >= sent.not_before
    # Receives that only waited for the ETA do not use up attempts.
    assert due[0][0].attempt == 1


def test_release_with_no_delay_makes_the_message_visible_at_once(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    transport = make_transport(sqs.create_queue("release"), visibility_timeout=30.0)
    transport.publish([message()])
    got = receive_until(transport, 1)
    transport.nack(got, delay=0.0)
    assert len(receive_until(transport, 1, timeout=3.0)) == 1


# -- dead letters --------------------------------------------------------------


def test_dead_letter_to_dlq_url_records_the_attempt_count(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    dlq_url = sqs.create_queue("poison-dlq")
    transport = make_transport(sqs.create_queue("poison"), dlq_url=dlq_url)
    transport.publish([message(body=b'{"poison": true}')])
    for _ in range(2):
        got = receive_until(transport, 1)
        got[0].attempt += 1  # a retry, as the runtime hands it back
        transport.nack(got, delay=0.0)
    third = receive_until(transport, 1)

    transport.dead_letter(third[0], "ValueError: poison")

    dead = receive_until(make_transport(dlq_url), 1)
    assert [m.body for m in dead] == [b'{"poison": true}']
    assert dead[0].attributes[DLQ_ATTEMPTS_ATTR] == "3"
    assert dead[0].attributes[DLQ_REASON_ATTR] == "ValueError: poison"


def test_dead_letter_fits_the_facts_into_sqs_attribute_limit(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    dlq_url = sqs.create_queue("crowded-dlq")
    transport = make_transport(sqs.create_queue("crowded"), dlq_url=dlq_url)
    crowded = {f"a{i}": str(i) for i in range(9)}  # 9 of the user's + the topic = 10
    transport.publish([Message(topic="t", body=b"x", attributes=crowded)])
    got = receive_until(transport, 1)

    transport.dead_letter(got[0], "too many")

    dead = receive_until(make_transport(dlq_url), 1)
    assert dead[0].attributes[DLQ_REASON_ATTR] == "too many"
    assert all(dead[0].attributes[name] == value for name, value in crowded.items())


def test_without_dlq_url_the_queue_redrive_policy_moves_the_poison_message(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    dlq_url = sqs.create_queue("redrive-dlq")
    policy = {"deadLetterTargetArn": sqs.queue_arn(dlq_url), "maxReceiveCount": "2"}
    queue_url = sqs.create_queue("redrive", RedrivePolicy=json.dumps(policy))
    transport = make_transport(queue_url)
    sent = message()
    transport.publish([sent])

    # Each receive dead-letters it, as the runtime would; SQS moves it to its DLQ
    # on the receive after maxReceiveCount.
    for _ in range(2):
        for m in receive_until(transport, 1, timeout=3.0):
            transport.dead_letter(m, "poison")

    assert receive_until(transport, 1, timeout=3.0) == []
    dead = receive_until(make_transport(dlq_url), 1)
    assert [m.body for m in dead] == [sent.body]


def test_dead_letter_without_any_dlq_refuses_and_keeps_the_message(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    transport = make_transport(sqs.create_queue("no-dlq"))
    transport.publish([message()])
    got = receive_until(transport, 1)

    with pytest.raises(ConfigurationError) as raised:
        transport.dead_letter(got[0], "nowhere to go")

    # It says what is wrong, how to fix it, and what became of the message.
    text = str(raised.value)
    assert transport.queue_url in text and got[0].id in text
    assert "dlq_url=" in text and "RedrivePolicy" in text and "received again" in text

    assert len(receive_until(transport, 1, timeout=transport.lease_s + 3.0)) == 1


# -- malformed envelopes -----------------------------------------------------------

BROKEN = [
    pytest.param({"taskorbit-attempt": "two"}, "taskorbit-attempt", id="attempt-two"),
    pytest.param({"taskorbit-attempt": "0"}, "taskorbit-attempt", id="attempt-zero"),
    pytest.param({"taskorbit-attempt": "-1"}, "taskorbit-attempt", id="attempt-negative"),
    pytest.param({"taskorbit-body-encoding": "base64"}, "base64", id="body-not-base64"),
    pytest.param(
        {"taskorbit-body-encoding": "gzip"}, "taskorbit-body-encoding", id="unknown-encoding"
    ),
    pytest.param({"taskorbit-not-before": "soon"}, "taskorbit-not-before", id="not-before-soon"),
    pytest.param({"taskorbit-not-before": "inf"}, "taskorbit-not-before", id="not-before-inf"),
    pytest.param({"taskorbit-not-before": "nan"}, "taskorbit-not-before", id="not-before-nan"),
    pytest.param({"taskorbit-dlq": "{reason"}, "taskorbit-dlq", id="packed-not-json"),
    pytest.param({"taskorbit-dlq": "[1, 2]"}, "taskorbit-dlq", id="packed-not-an-object"),
]


def send_raw(sqs: SQSFixture, queue_url: str, body: str, attributes: dict[str, Any]) -> None:
    """Send as a foreign or buggy producer would: straight through boto3. String
    values become String attributes; dicts are sent as they are."""
    sqs.client.send_message(
        QueueUrl=queue_url,
        MessageBody=body,
        MessageAttributes={
            name: value if isinstance(value, dict) else {"DataType": "String", "StringValue": value}
            for name, value in attributes.items()
        },
    )


def receive_raw(sqs: SQSFixture, queue_url: str) -> dict[str, Any]:
    """One message exactly as SQS returns it."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        got = sqs.client.receive_message(
            QueueUrl=queue_url, MessageAttributeNames=["All"], WaitTimeSeconds=1
        ).get("Messages", [])
        if got:
            return dict(got[0])
    raise AssertionError(f"nothing arrived in {queue_url}")


@pytest.mark.parametrize(("broken", "field"), BROKEN)
def test_a_broken_envelope_is_received_as_malformed_and_its_neighbours_are_not(
    sqs: SQSFixture, make_transport: MakeTransport, broken: dict[str, str], field: str
) -> None:
    queue_url = sqs.create_queue("broken")
    transport = make_transport(queue_url)
    before, after = message(), message()
    transport.publish([before])
    send_raw(sqs, queue_url, "not base64!", {"taskorbit-topic": "t", "color": "red", **broken})
    transport.publish([after])

    got = receive_until(transport, 3)

    bad = [m for m in got if m.malformed is not None]
    assert sorted(m.body for m in got if m.malformed is None) == sorted([before.body, after.body])
    assert len(bad) == 1 and field in (bad[0].malformed or ""), bad[0].malformed
    # What could be read was read: the topic, the body text, the receive count.
    assert (bad[0].topic, bad[0].body, bad[0].attempt) == ("t", b"not base64!", 1)
    assert bad[0].attributes.get("color") == "red"
    assert bad[0].not_before is None


def test_every_broken_field_of_one_envelope_is_named(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    queue_url = sqs.create_queue("broken-twice")
    send_raw(sqs, queue_url, "x", {"taskorbit-attempt": "two", "taskorbit-not-before": "inf"})
    [bad] = receive_until(make_transport(queue_url), 1)
    assert "taskorbit-attempt 'two'" in (bad.malformed or "")
    assert "taskorbit-not-before 'inf'" in (bad.malformed or "")


def test_dead_letter_of_a_malformed_message_keeps_body_and_attributes_as_received(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    dlq_url = sqs.create_queue("broken-dlq")
    queue_url = sqs.create_queue("broken-source")
    transport = make_transport(queue_url, dlq_url=dlq_url)
    sent = {
        "taskorbit-topic": {"DataType": "String", "StringValue": "t"},
        "taskorbit-body-encoding": {"DataType": "String", "StringValue": "base64"},
        "taskorbit-attempt": {"DataType": "String", "StringValue": "two"},
        "amount": {"DataType": "Number", "StringValue": "12.50"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    }
    send_raw(sqs, queue_url, "%%% not base64 %%%", sent)
    [bad] = receive_until(transport, 1)
    before = time.time()

    transport.dead_letter(bad, f"malformed envelope: {bad.malformed}")

    raw = receive_raw(sqs, dlq_url)
    assert raw["Body"] == "%%% not base64 %%%"
    copied = raw["MessageAttributes"]
    assert {name: copied[name] for name in sent} == sent
    assert copied["taskorbit-dlq-reason"]["StringValue"].startswith("malformed envelope: ")
    assert copied["taskorbit-dlq-attempts"]["StringValue"] == "1"
    assert before - 1 <= float(copied["taskorbit-dlq-time"]["StringValue"]) <= time.time() + 1
    assert receive_until(transport, 1, timeout=transport.lease_s + 1.0) == []


def test_a_crowded_malformed_dead_letter_folds_the_facts_into_one_attribute(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    dlq_url = sqs.create_queue("crowded-broken-dlq")
    queue_url = sqs.create_queue("crowded-broken")
    transport = make_transport(queue_url, dlq_url=dlq_url)
    crowded = {f"a{i}": str(i) for i in range(8)}
    send_raw(
        sqs, queue_url, "x", {"taskorbit-topic": "t", "taskorbit-not-before": "inf", **crowded}
    )
    [bad] = receive_until(transport, 1)

    transport.dead_letter(bad, "malformed envelope: not-before")

    [dead] = receive_until(make_transport(dlq_url), 1)
    assert dead.attributes[DLQ_REASON_ATTR] == "malformed envelope: not-before"
    assert all(dead.attributes[name] == value for name, value in crowded.items())
    assert dead.topic == "t" and "taskorbit-not-before" in (dead.malformed or "")


def test_a_malformed_message_is_handed_back_in_place_never_as_a_copy(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    queue_url = sqs.create_queue("broken-nack")
    transport = make_transport(queue_url)
    send_raw(sqs, queue_url, "x", {"taskorbit-not-before": "soon"})
    [bad] = receive_until(transport, 1)
    calls = count_calls(transport)

    transport.nack([bad], delay=0.0)

    [again] = receive_until(transport, 1)
    assert "SendMessageBatch" not in calls
    assert (again.id, again.malformed) == (bad.id, bad.malformed)


# -- attempts carried by nack ------------------------------------------------------


def test_a_retry_whose_attempt_sqs_will_count_changes_the_visibility(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    transport = make_transport(sqs.create_queue("count-agrees"))
    transport.publish([message()])
    [first] = receive_until(transport, 1)
    calls = count_calls(transport)

    first.attempt += 1  # the runtime, before it hands a retry back
    transport.nack([first], delay=1.0)

    [again] = receive_until(transport, 1, timeout=5.0)
    assert calls.get("ChangeMessageVisibilityBatch") == 1
    assert "SendMessageBatch" not in calls and "DeleteMessageBatch" not in calls
    assert (again.id, again.attempt) == (first.id, 2)
    transport.ack([again])


def test_retries_that_ran_from_the_timer_wheel_are_carried_by_a_copy(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    transport = make_transport(sqs.create_queue("count-carried"))
    sent = message(color="blue")
    transport.publish([sent])
    [first] = receive_until(transport, 1)
    calls = count_calls(transport)
    nacked_at = time.monotonic()

    # Attempts 2 and 3 ran from the worker's timer wheel; attempt 4 goes to SQS.
    first.attempt += 3
    transport.nack([first], delay=1.0)

    assert calls.get("SendMessageBatch") == 1 and calls.get("DeleteMessageBatch") == 1
    assert "ChangeMessageVisibilityBatch" not in calls
    [copy] = receive_until(transport, 1, timeout=5.0)
    assert time.monotonic() - nacked_at >= 0.9  # DelaySeconds carried the delay
    assert (copy.body, copy.attempt, copy.attributes) == (sent.body, 4, {"color": "blue"})
    assert copy.id != first.id
    # From here on SQS counts right again: the next retry changes the visibility.
    copy.attempt += 1
    transport.nack([copy], delay=0.0)
    [fifth] = receive_until(transport, 1)
    assert (fifth.id, fifth.attempt) == (copy.id, 5)
    transport.ack([fifth])


def test_a_hand_back_while_waiting_for_the_not_before_keeps_it_and_the_attempt(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    # DelaySeconds is scaled down to 1 s here, so the message arrives early.
    transport = make_transport(sqs.create_queue("hand-back-eta"), max_delay_native=1.0)
    sent = message()
    sent.not_before = time.time() + 4.0
    transport.publish([sent])
    [early] = receive_until(transport, 1, timeout=5.0)
    assert early.not_before is not None and early.not_before > time.time()

    transport.nack([early], delay=0.0)  # a shutdown: handed back without a run

    [again] = receive_until(transport, 1, timeout=5.0)
    assert again.not_before == pytest.approx(sent.not_before, abs=1e-3)
    assert again.attempt == 1
    transport.ack([again])


# -- FIFO ----------------------------------------------------------------------


def test_fifo_keeps_order_within_each_group(sqs: SQSFixture, make_transport: MakeTransport) -> None:
    transport = make_transport(sqs.create_queue("orders.fifo"))
    assert transport.ordered
    sent = [
        Message(topic="t", body=f"{group}-{i}".encode(), ordering_key=group)
        for i in range(6)
        for group in ("a", "b")
    ]
    transport.publish(sent)

    got: list[Message] = []
    deadline = time.monotonic() + 10.0
    while len(got) < len(sent) and time.monotonic() < deadline:
        batch = transport.receive(10, timeout=1.0)
        got.extend(batch)
        transport.ack(batch)

    for group in ("a", "b"):
        bodies = [m.body for m in got if m.ordering_key == group]
        assert bodies == [f"{group}-{i}".encode() for i in range(6)]


def test_fifo_retry_longer_than_the_native_limit_keeps_its_group_and_arrives_once(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    # FIFO queues have no per-message DelaySeconds: the copy carries only the
    # not-before, and waiting for it uses visibility (scaled down to 2 s here).
    transport = make_transport(sqs.create_queue("later.fifo"), max_delay_native=2.0)
    transport.publish([Message(topic="t", body=b"again", ordering_key="acct-1")])
    first = receive_until(transport, 1)
    nacked_at = time.time()

    first[0].attempt += 1
    transport.nack(first, delay=5.0)

    due = run_like_the_runtime(transport, 9.0)
    assert [(m.body, m.ordering_key) for m, _ in due] == [(b"again", "acct-1")]
    assert 5.0 <= due[0][1] - nacked_at < 8.0
    # At least the attempt it was handed back with; each wait for the not-before
    # on FIFO costs a receive count (docs/transports/sqs.md).
    assert due[0][0].attempt >= 2


def test_fifo_hand_back_keeps_the_group_order_at_the_cost_of_one_receive(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    transport = make_transport(sqs.create_queue("hand-back.fifo"))
    transport.publish(
        [Message(topic="t", body=f"a-{i}".encode(), ordering_key="a") for i in (0, 1)]
    )
    [first] = transport.receive(1, timeout=2.0)
    calls = count_calls(transport)

    transport.nack([first], delay=0.0)  # a shutdown: handed back without a run

    [again] = transport.receive(1, timeout=2.0)
    assert "SendMessageBatch" not in calls  # a copy would go behind a-1
    assert (again.body, again.id) == (b"a-0", first.id)
    assert again.attempt == 2  # SQS counted the receive (docs/transports/sqs.md)
    transport.ack([again])
    assert [m.body for m in receive_until(transport, 1)] == [b"a-1"]


def test_fifo_retries_that_ran_from_the_timer_wheel_are_remembered_by_the_worker(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    transport = make_transport(sqs.create_queue("owed.fifo"))
    transport.publish([Message(topic="t", body=b"x", ordering_key="a")])
    [first] = receive_until(transport, 1)

    first.attempt += 3  # attempts 2 and 3 ran locally; attempt 4 goes to SQS
    transport.nack([first], delay=0.0)
    [again] = receive_until(transport, 1)
    received_as = again.attempt
    again.attempt += 1
    transport.nack([again], delay=0.0)
    [third] = receive_until(transport, 1)

    assert [m.id for m in (again, third)] == [first.id, first.id]
    assert (received_as, third.attempt) == (4, 5)


def test_fifo_publish_without_an_ordering_key_is_refused_with_the_fix(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    transport = make_transport(sqs.create_queue("strict.fifo"))
    with pytest.raises(ConfigurationError, match="ordering_key"):
        transport.publish([message()])


def test_fifo_messages_with_one_idempotency_key_are_delivered_once(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    transport = make_transport(sqs.create_queue("dedup.fifo"), visibility_timeout=30.0)
    twins = [
        Message(topic="t", body=b"charge", ordering_key="o", attributes={"IdempotencyKey": "k1"})
        for _ in range(2)
    ]
    transport.publish(twins)
    got = receive_until(transport, 2, timeout=3.0)
    assert [m.body for m in got] == [b"charge"]


# -- payloads, configuration and errors -----------------------------------------


def test_binary_payloads_round_trip(sqs: SQSFixture, make_transport: MakeTransport) -> None:
    transport = make_transport(sqs.create_queue("binary"))
    body = bytes(range(256))
    transport.publish([message(body=body)])
    got = receive_until(transport, 1)
    assert got[0].body == body
    assert "taskorbit-body-encoding" not in got[0].attributes


def test_oversized_payload_is_refused_naming_the_limit_and_nothing_is_sent(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    transport = make_transport(sqs.create_queue("big"))
    with pytest.raises(PayloadTooLargeError, match="262,144 bytes"):
        transport.publish([message(), message(body=b"x" * 262_144)])
    assert receive_until(transport, 1, timeout=1.0) == []


def test_publish_sends_ten_messages_per_call(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    transport = make_transport(sqs.create_queue("burst"))
    calls = count_calls(transport)
    ids = transport.publish([message() for _ in range(25)])
    assert len(set(ids)) == 25
    assert calls == {"SendMessageBatch": 3}


def test_publish_splits_batches_that_would_exceed_the_size_limit(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    transport = make_transport(sqs.create_queue("heavy"))
    calls = count_calls(transport)
    # Three 100 KiB messages: SQS limits a whole SendMessageBatch to 256 KiB.
    heavy = [message(body=bytes([65 + i]) * 100_000) for i in range(3)]
    transport.publish(heavy)
    assert calls == {"SendMessageBatch": 2}
    got = receive_until(transport, 3)
    assert sorted(m.body for m in got) == [m.body for m in heavy]


def test_too_many_attributes_are_refused(sqs: SQSFixture, make_transport: MakeTransport) -> None:
    transport = make_transport(sqs.create_queue("attrs"))
    with pytest.raises(ConfigurationError, match="at most 10"):
        many = {f"a{i}": "v" for i in range(10)}
        transport.publish([Message(topic="t", body=b"x", attributes=many)])


def test_messages_from_other_producers_get_the_default_topic(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    queue_url = sqs.create_queue("foreign")
    sqs.client.send_message(QueueUrl=queue_url, MessageBody='{"order": 7}')
    transport = make_transport(queue_url, default_topic="orders.import")
    got = receive_until(transport, 1)
    assert [(m.topic, m.body, m.attributes) for m in got] == [
        ("orders.import", b'{"order": 7}', {})
    ]


def test_a_queue_can_be_named_instead_of_addressed(sqs: SQSFixture) -> None:
    url = sqs.create_queue("by-name")
    transport = SQSTransport(queue_name="by-name", client=sqs.client)
    assert transport.queue_url == url


def test_an_unknown_queue_name_is_a_configuration_error(sqs: SQSFixture) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        SQSTransport(queue_name="never-created", client=sqs.client)


def test_an_unreachable_endpoint_raises_a_connection_error_without_the_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = boto3.session.Session().client(
        "sqs",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="very-secret-value",
    )
    transport = SQSTransport("http://127.0.0.1:1/123456789012/q", client=client)
    with pytest.raises(TransportConnectionError) as raised:
        transport.receive(1, timeout=0)
    assert "very-secret-value" not in str(raised.value) + repr(transport) + caplog.text
