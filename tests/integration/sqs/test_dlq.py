"""The SQS dead-letter queue against moto_server: list, redrive into the main queue."""

from __future__ import annotations

import pytest

from taskorbit.dlq import REDRIVEN_FROM_ATTR, Selection, for_transport
from taskorbit.message import Message
from taskorbit.transports.sqs import SQSTransport
from tests.contract import receive_until
from tests.servers.sqs import REGION, SQSFixture


@pytest.fixture
def transport(sqs: SQSFixture, monkeypatch: pytest.MonkeyPatch) -> SQSTransport:
    # The DLQ reader builds its own client from the queue URL and the environment.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    main = sqs.create_queue("orders")
    dlq = sqs.create_queue("orders-dlq")
    return SQSTransport(main, dlq_url=dlq, client=sqs.server.client(), visibility_timeout=5)


def dead_letter(transport: SQSTransport, *bodies: bytes, topic: str = "charge") -> None:
    transport.publish([Message(topic, b, attributes={"customer": "c1"}) for b in bodies])
    received = receive_until(transport, len(bodies), timeout=10.0)
    assert sorted(m.body for m in received) == sorted(bodies)
    for m in received:
        transport.dead_letter(m, f"rejected {m.body.decode()}")


def test_list_shows_reason_and_attempts_and_leaves_messages_in_the_dlq(
    transport: SQSTransport,
) -> None:
    dead_letter(transport, b"1", b"2")
    dlq = for_transport(transport)
    listed = dlq.list()
    assert sorted(x.reason for x in listed) == ["rejected 1", "rejected 2"]
    assert {x.attempts for x in listed} == {1}
    # Listing released them again, in place: the ids `show` and `redrive` take stay.
    assert sorted(x.id for x in dlq.list()) == sorted(x.id for x in listed)


def test_a_malformed_dead_letter_is_listed_with_what_arrived(
    sqs: SQSFixture, transport: SQSTransport
) -> None:
    sqs.client.send_message(
        QueueUrl=transport.queue_url,
        MessageBody="raw text",
        MessageAttributes={
            "taskorbit-topic": {"DataType": "String", "StringValue": "charge"},
            "taskorbit-not-before": {"DataType": "String", "StringValue": "soon"},
        },
    )
    [bad] = transport.receive(10, 1.0)
    transport.dead_letter(bad, f"malformed message: {bad.malformed}")

    [letter] = for_transport(transport).list()

    assert letter.reason.startswith("malformed message: taskorbit-not-before 'soon'")
    assert (letter.topic, letter.message.body, letter.attempts) == ("charge", b"raw text", 1)


def test_redrive_copies_to_the_main_queue_then_deletes_from_the_dlq(
    transport: SQSTransport,
) -> None:
    dead_letter(transport, b"1", b"2", b"3")
    dlq = for_transport(transport)
    moved = dlq.redrive(Selection.of(reason="rejected 2"))
    assert [x.message.body for x in moved] == [b"2"]
    assert sorted(x.reason for x in dlq.list()) == ["rejected 1", "rejected 3"]
    [back] = transport.receive(10, 1.0)
    assert (back.topic, back.body, back.attempt) == ("charge", b"2", 1)
    # A new message: the id redrive reported, naming the dead letter it came from.
    assert back.attributes == {"customer": "c1", REDRIVEN_FROM_ATTR: moved[0].id}
    assert back.id == moved[0].redriven_as != moved[0].id


def test_a_copy_with_no_room_for_the_link_is_redriven_without_it(
    transport: SQSTransport,
) -> None:
    # Nine attributes of its own and the topic: SQS's ten. The link would be the 11th.
    own = {f"a{i}": str(i) for i in range(9)}
    transport.publish([Message("charge", b"9", attributes=own)])
    [received] = receive_until(transport, 1, timeout=10.0)
    transport.dead_letter(received, "full")
    dlq = for_transport(transport)
    [moved] = dlq.redrive(Selection.of(reason="full"))
    [back] = transport.receive(10, 1.0)
    assert back.id == moved.redriven_as
    assert back.attributes == own
    assert dlq.list() == []


def test_a_dry_run_redrive_moves_nothing(transport: SQSTransport) -> None:
    dead_letter(transport, b"1")
    dlq = for_transport(transport)
    assert len(dlq.redrive(Selection(), dry_run=True)) == 1
    assert transport.receive(10, 0.0) == []
    assert len(dlq.list()) == 1
