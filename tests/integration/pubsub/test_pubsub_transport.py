"""What PubSubTransport does beyond the shared contract, against the emulator."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest

from taskorbit.errors import ConfigurationError, PayloadTooLargeError, TransportError
from taskorbit.message import Message
from taskorbit.transports.pubsub import PubSubTransport
from taskorbit.transports.pubsub import transport as pubsub_module
from taskorbit.transports.pubsub.wire import Envelope, Receipt
from taskorbit.transports.pubsub.wire import read_envelope as real_read_envelope
from tests.contract import new_message, receive_until
from tests.integration.pubsub.conftest import (
    MIN_DELIVERY_ATTEMPTS,
    PubSubAdmin,
    drain,
    require_emulator,
)
from tests.servers.pubsub import PubSubServer
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


class CountingSubscriber:
    """The real SubscriberClient, counting the RPCs the transport makes."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: dict[str, list[int]] = {}  # method -> sizes (ack ids per call)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.real, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.setdefault(name, []).append(len(kwargs.get("ack_ids", ())))
            return method(*args, **kwargs)

        return counted


def test_ack_of_many_messages_is_one_acknowledge_call(pubsub: PubSubAdmin) -> None:
    res = pubsub.resources()
    counting = CountingSubscriber(pubsub.subscriber)
    transport = pubsub.transport(res, subscriber=counting)
    transport.publish([new_message() for _ in range(250)])
    got = receive_until(transport, 250, timeout=15.0, batch=1000)
    assert len(got) == 250
    assert transport.ack(got) == []
    assert counting.calls["acknowledge"] == [250]
    assert receive_until(transport, 1, timeout=2.0) == []


def test_a_bad_ack_id_is_reported_and_the_rest_of_the_batch_is_still_acked(
    pubsub: PubSubAdmin,
    needs_emulator: None,  # pstest accepts any ack id
) -> None:
    res = pubsub.resources()
    transport = pubsub.transport(res)
    transport.publish([new_message() for _ in range(3)])
    got = receive_until(transport, 3)
    forged = Message("forged", b"", id="forged", receipt=Receipt("not-an-ack-id", False, 0))
    failures = transport.ack([*got, forged])
    assert [(f.message, f.retryable) for f in failures] == [(forged, False)]
    # Had the three not been acked, a zero deadline would bring them back at once.
    pubsub.subscriber.modify_ack_deadline(
        subscription=res.subscription,
        ack_ids=[m.receipt.ack_id for m in got],
        ack_deadline_seconds=0,
    )
    assert receive_until(transport, 1, timeout=2.0) == []


def test_a_pull_returns_at_most_what_was_asked(pubsub: PubSubAdmin) -> None:
    res = pubsub.resources()
    transport = pubsub.transport(res)
    sent = [new_message() for _ in range(30)]
    transport.publish(sent)
    pulls: list[list[Message]] = []

    def all_pulled() -> bool:
        pulls.append(transport.receive(7, timeout=1.0))
        return sum(map(len, pulls)) >= len(sent)

    wait_for(all_pulled, 15.0, "all 30 messages in pulls of at most 7")
    # Pub/Sub may return fewer than asked, so "at most" is the promise, not a count.
    assert max(map(len, pulls)) <= 7, [len(p) for p in pulls]
    got = [m for pull in pulls for m in pull]
    assert sorted(m.body for m in got) == sorted(m.body for m in sent)  # each exactly once
    assert transport.ack(got) == []


def test_max_bytes_stops_pulling_until_held_messages_are_settled(pubsub: PubSubAdmin) -> None:
    res = pubsub.resources()
    transport = pubsub.transport(res, max_bytes=1000)
    transport.publish([Message("big", b"x" * 1500) for _ in range(2)])
    first = receive_until(transport, 1, batch=1)
    assert len(first) == 1
    assert transport.receive(1, timeout=0.5) == []  # 1,500 bytes held >= 1,000
    transport.ack(first)
    assert len(receive_until(transport, 1, batch=1)) == 1


def test_attempt_counter_in_attributes_survives_a_new_worker(pubsub: PubSubAdmin) -> None:
    res = pubsub.resources()  # no dead-letter policy, so no delivery_attempt
    transport = pubsub.transport(res)
    transport.publish([new_message()])
    for expected in (1, 2):
        got = receive_until(transport, 1)
        assert [m.attempt for m in got] == [expected]
        got[0].attempt += 1  # a retry, as the runtime hands it back
        transport.nack(got)
    restarted = pubsub.transport(res)
    assert [m.attempt for m in receive_until(restarted, 1)] == [3]


def test_delivery_attempt_is_used_when_the_subscription_has_a_dead_letter_policy(
    pubsub: PubSubAdmin, needs_emulator: None
) -> None:
    res = pubsub.resources(dead_letter_policy=True, max_delivery_attempts=10)
    transport = pubsub.transport(res)
    transport.publish([new_message()])
    first = receive_until(transport, 1)
    first[0].attempt += 1
    transport.nack(first, delay=0.0)
    again = receive_until(transport, 1)
    assert [m.attempt for m in again] == [2]
    # Pub/Sub counted it: the nack was a modify_ack_deadline, not a re-published copy.
    assert again[0].id == first[0].id


Nack = tuple[int, float]  # (attempt the runtime sets, relative to the one received; delay)


@pytest.mark.parametrize("policy", [False, True], ids=["attribute-count", "delivery-attempt"])
@pytest.mark.parametrize(
    ("what", "nacks", "in_place"),
    [
        # Every retry adds one; Pub/Sub's count does that by itself, the attribute not.
        ("retries", [(1, 0.0), (1, 0.0), (1, 0.0)], {True: [True] * 3, False: [False] * 3}),
        # A hand-back without a run (shutdown, not yet due) keeps the attempt.
        ("hand-backs", [(0, 0.0), (0, 0.0)], {True: [False] * 2, False: [True] * 2}),
        # Two local retries in the worker's timer wheel, then a retry through the
        # broker: the count carries on from 3, it does not restart from 2.
        ("local retries first", [(3, 0.0), (1, 0.0)], {True: [False, True], False: [False] * 2}),
        # Longer than Pub/Sub carries (2 s stands in for 600 s): always a copy.
        ("long delay", [(1, 3.0)], {True: [False], False: [False]}),
    ],
)
def test_nack_carries_the_attempt_the_runtime_set(
    pubsub: PubSubAdmin,
    pubsub_emulator: PubSubServer,
    policy: bool,
    what: str,
    nacks: list[Nack],
    in_place: dict[bool, list[bool]],
) -> None:
    if policy:
        require_emulator(pubsub_emulator, "dead-letter policies")
    res = pubsub.resources(dead_letter_policy=policy, max_delivery_attempts=50)
    transport = pubsub.transport(res, max_delay_native=2.0)
    sent = new_message()
    transport.publish([sent])
    [current] = receive_until(transport, 1)
    for (step, delay), expect_in_place in zip(nacks, in_place[policy], strict=True):
        wanted = current.attempt + step
        current.attempt = wanted
        transport.nack([current], delay=delay)
        [again] = receive_until(transport, 1, timeout=10.0)
        assert (again.body, again.attempt) == (sent.body, wanted), what
        # In place keeps the message id; a copy is a new message.
        assert (again.id == current.id) is expect_in_place, what
        current = again
    assert transport.ack([current]) == []
    assert receive_until(transport, 1, timeout=2.0) == []


@pytest.mark.parametrize("policy", [False, True], ids=["attribute-count", "delivery-attempt"])
def test_retry_copies_are_acknowledged_unread_by_the_other_subscriptions(
    pubsub: PubSubAdmin, pubsub_emulator: PubSubServer, policy: bool
) -> None:
    if policy:
        require_emulator(pubsub_emulator, "dead-letter policies")
    res = pubsub.resources(dead_letter_policy=policy, max_delivery_attempts=50)
    other_res = pubsub.second_subscription(res)
    mine = pubsub.transport(res, max_delay_native=2.0)
    other = pubsub.transport(other_res)
    sent = new_message()
    mine.publish([sent])
    assert [m.body for m in drain(other, expect=1)] == [sent.body]
    [current] = receive_until(mine, 1)
    # A retry, a hand-back, a retry beyond the native delay: with either way of
    # counting, at least one of them has to be a copy on the topic.
    for step, delay in [(1, 0.0), (0, 0.0), (1, 3.0)]:
        current.attempt += step
        mine.nack([current], delay=delay)
        [current] = receive_until(mine, 1, timeout=10.0)
        assert current.body == sent.body
    assert current.attempt == 3
    assert current.attributes == {}  # the routing attribute is not the user's
    assert mine.ack([current]) == []
    # Two were copies (the retries with a policy: the hand-back and the long one;
    # without: both retries). The other subscription acknowledged them unread.
    deadline = time.monotonic() + 10.0
    while other.skipped_copies < 2 and time.monotonic() < deadline:
        assert other.receive(10, timeout=0.5) == []
    assert other.skipped_copies == 2
    assert mine.skipped_copies == 0
    assert receive_until(other, 1, timeout=2.0) == []


def test_a_targeted_copy_that_pubsub_forwarded_to_its_dead_letter_topic_is_read_there(
    pubsub: PubSubAdmin, needs_emulator: None
) -> None:
    res = pubsub.resources(dead_letter_policy=True, max_delivery_attempts=MIN_DELIVERY_ATTEMPTS)
    transport = pubsub.transport(res)
    sent = new_message()
    transport.publish([sent])
    [current] = receive_until(transport, 1)
    transport.nack([current])  # a hand-back: a copy for this subscription
    # Let the subscription's policy forward the copy: nack it at once, unread, until
    # a pull finds nothing (the emulator forwards when it would deliver once more).
    for _ in range(MIN_DELIVERY_ATTEMPTS + 1):
        got = receive_until(transport, 1, timeout=5.0)
        if not got:
            break
        pubsub.subscriber.modify_ack_deadline(
            subscription=res.subscription,
            ack_ids=[got[0].receipt.ack_id],
            ack_deadline_seconds=0,
        )
    dead = drain(pubsub.dead_letter_reader(res), expect=1)
    assert [m.body for m in dead] == [sent.body]


def test_a_keyed_message_on_an_ordered_subscription_is_handed_back_in_place(
    pubsub: PubSubAdmin, needs_emulator: None
) -> None:
    res = pubsub.resources(dead_letter_policy=True, ordering=True, max_delivery_attempts=50)
    transport = pubsub.transport(res)
    sent = [Message("ordered", str(i).encode(), ordering_key="k1") for i in range(3)]
    transport.publish(sent)
    got = receive_until(transport, 3, timeout=10.0)
    assert [m.body for m in got] == [b"0", b"1", b"2"]
    transport.nack(got)  # a hand-back of all three: their place in the key is kept
    again = receive_until(transport, 3, timeout=10.0)
    assert [m.body for m in again] == [b"0", b"1", b"2"]
    assert [m.id for m in again] == [m.id for m in got]
    # The price: a hand-back counts as an attempt here (documented, as on SQS FIFO).
    assert [m.attempt for m in again] == [2, 2, 2]
    # A count that would go down still needs a copy, so that max_retries holds.
    again[0].attempt = 5
    transport.nack(again[:1])
    transport.ack(again[1:])
    [last] = receive_until(transport, 1, timeout=10.0)
    assert (last.body, last.attempt) == (b"0", 5)
    assert last.id != again[0].id
    assert transport.ack([last]) == []


BROKEN = [
    ("taskorbit-not-before", "inf"),
    ("taskorbit-not-before", "nan"),
    ("taskorbit-not-before", "soon"),
    ("taskorbit-attempt", "two"),
    ("taskorbit-attempt", "0"),
    ("taskorbit-attempt", "-1"),
]


@pytest.mark.parametrize(("attribute", "raw"), BROKEN, ids=[f"{a}={r}" for a, r in BROKEN])
def test_an_unreadable_attribute_makes_one_message_malformed_and_its_neighbours_run(
    pubsub: PubSubAdmin, attribute: str, raw: str
) -> None:
    res = pubsub.resources()
    transport = pubsub.transport(res)
    before, after = new_message(), new_message()
    transport.publish([before])
    pubsub.publish_raw(res, b"broken", **{"taskorbit-topic": "jobs", attribute: raw})
    transport.publish([after])
    got = receive_until(transport, 3, batch=100)
    good = [m for m in got if m.malformed is None]
    [bad] = [m for m in got if m.malformed is not None]
    assert sorted(m.body for m in good) == sorted([before.body, after.body])
    assert bad.malformed is not None and bad.malformed.startswith(f"{attribute} is {raw!r}")
    assert (bad.topic, bad.body, bad.attempt, bad.not_before) == ("jobs", b"broken", 1, None)
    assert transport.ack(got) == []
    assert receive_until(transport, 1, timeout=2.0) == []


def test_an_unexpected_error_reading_one_message_does_not_fail_the_pull(
    pubsub: PubSubAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = pubsub.resources()
    transport = pubsub.transport(res)

    def read_envelope(attributes: Mapping[str, str]) -> Envelope:
        if "explode" in attributes:
            raise RuntimeError("boom")
        return real_read_envelope(attributes)

    monkeypatch.setattr(pubsub_module, "read_envelope", read_envelope)
    transport.publish([new_message(), new_message(explode="yes"), new_message()])
    got = receive_until(transport, 3, batch=100)
    assert [m.malformed for m in got if m.malformed] == ["unreadable envelope: RuntimeError: boom"]
    assert len(got) == 3
    assert transport.ack(got) == []


def test_a_malformed_message_is_dead_lettered_with_its_attributes_as_received(
    pubsub: PubSubAdmin,
) -> None:
    res = pubsub.resources()
    transport = pubsub.transport(res, dlq_topic=res.dlq_topic)
    received_as = {"color": "red", "taskorbit-attempt": "two", "taskorbit-not-before": "soon"}
    pubsub.publish_raw(res, b"broken", **received_as)  # and no taskorbit-topic
    [bad] = receive_until(transport, 1)
    assert bad.malformed is not None
    before = time.time()
    transport.dead_letter(bad, f"malformed envelope: {bad.malformed}")
    response = pubsub.subscriber.pull(subscription=res.dlq_subscription, max_messages=10)
    [dead] = [r.message for r in response.received_messages]
    attributes = dict(dead.attributes)
    assert dead.data == b"broken"
    assert attributes.pop("taskorbit-dlq-reason") == f"malformed envelope: {bad.malformed}"
    assert attributes.pop("taskorbit-dlq-attempts") == "1"
    assert before <= float(attributes.pop("taskorbit-dlq-time")) <= time.time()
    assert attributes == received_as
    assert receive_until(transport, 1, timeout=2.0) == []


def test_a_hand_back_of_a_malformed_message_keeps_it_as_received(pubsub: PubSubAdmin) -> None:
    res = pubsub.resources()
    transport = pubsub.transport(res)
    pubsub.publish_raw(res, b"broken", **{"taskorbit-attempt": "two"})
    [bad] = receive_until(transport, 1)
    transport.nack([bad])
    [again] = receive_until(transport, 1)
    assert (again.id, again.malformed) == (bad.id, bad.malformed)
    assert transport.ack([again]) == []


@pytest.mark.parametrize("policy", [False, True], ids=["attribute-count", "delivery-attempt"])
def test_delay_beyond_the_native_maximum_is_delivered_once_after_it(
    pubsub: PubSubAdmin, pubsub_emulator: PubSubServer, policy: bool
) -> None:
    if policy:
        require_emulator(pubsub_emulator, "dead-letter policies")
    res = pubsub.resources(dead_letter_policy=policy, max_delivery_attempts=20)
    # A native maximum of 2 s stands in for Pub/Sub's 600 s.
    transport = pubsub.transport(res, max_delay_native=2.0)
    sent = new_message()
    transport.publish([sent])
    first = receive_until(transport, 1)
    nacked_at, nacked_wall = time.monotonic(), time.time()
    first[0].attempt += 1
    transport.nack(first, delay=5.0)
    deliveries: list[tuple[float, Message]] = []
    while time.monotonic() - nacked_at < 9.0:
        for message in transport.receive(10, timeout=1.0):
            deliveries.append((time.monotonic() - nacked_at, message))
            transport.ack([message])
    assert [m.body for _, m in deliveries] == [sent.body]
    arrived_after, message = deliveries[0]
    # Handed over at most redelay_threshold_s (1 s) early, marked with when it is due
    # so that the runtime holds it for the rest.
    assert arrived_after >= 3.9
    assert message.not_before is not None and message.not_before >= nacked_wall + 4.9
    assert message.attempt == 2


def test_message_not_yet_due_waits_in_the_broker_not_in_the_worker(pubsub: PubSubAdmin) -> None:
    res = pubsub.resources()
    transport = pubsub.transport(res)
    sent = new_message()
    sent.not_before = time.time() + 3.0
    transport.publish([sent])
    assert receive_until(transport, 1, timeout=2.0) == []
    later = receive_until(transport, 1, timeout=8.0)
    assert [m.body for m in later] == [sent.body]
    assert later[0].attempt == 1  # waiting is not an attempt


def test_dead_letter_without_a_dlq_topic_is_left_to_the_subscription_policy(
    pubsub: PubSubAdmin, needs_emulator: None
) -> None:
    res = pubsub.resources(dead_letter_policy=True, max_delivery_attempts=MIN_DELIVERY_ATTEMPTS)
    transport = pubsub.transport(res)  # no dlq_topic
    sent = new_message(color="green")
    transport.publish([sent])
    got = receive_until(transport, 1)
    transport.dead_letter(got[0], "poison")
    # Redeliveries are nacked at once, never handed out again, until Pub/Sub forwards it.
    assert receive_until(transport, 1, timeout=6.0) == []
    dead = drain(pubsub.dead_letter_reader(res), expect=1)
    assert [m.body for m in dead] == [sent.body]
    assert dead[0].attributes["color"] == "green"
    assert dead[0].topic == sent.topic


def test_publish_with_an_ordering_key_keeps_its_order(
    pubsub: PubSubAdmin, needs_emulator: None
) -> None:
    res = pubsub.resources(ordering=True)
    transport = pubsub.transport(res)
    sent = [Message("ordered", str(i).encode(), ordering_key="k1") for i in range(30)]
    transport.publish(sent)
    got = drain(transport, expect=30)
    assert [m.body for m in got] == [m.body for m in sent]
    assert {m.ordering_key for m in got} == {"k1"}


def test_a_payload_over_ten_megabytes_is_refused_before_anything_is_sent(
    pubsub: PubSubAdmin,
) -> None:
    res = pubsub.resources()
    transport = pubsub.transport(res)
    small, huge = new_message(), Message("big", b"x" * 10_000_001)
    with pytest.raises(PayloadTooLargeError, match="10,000,000 bytes"):
        transport.publish([small, huge])
    assert receive_until(transport, 1, timeout=1.5) == []


def test_a_missing_subscription_is_a_transport_error_that_says_so(pubsub: PubSubAdmin) -> None:
    res = pubsub.resources()
    res.subscription += "-missing"
    with pytest.raises(TransportError, match="not found"):
        pubsub.transport(res).receive(1, timeout=0.5)


def test_create_makes_the_topic_and_subscription(pubsub: PubSubAdmin) -> None:
    res = pubsub.resources()
    name = res.topic.rsplit("/", 1)[1] + "-made"
    transport = PubSubTransport(
        f"{name}-sub", name, project="taskorbit-test", create=True, ack_deadline_s=10
    )
    pubsub.transports.append(transport)
    transport.publish([new_message()])
    assert len(receive_until(transport, 1)) == 1


def test_messages_from_other_producers_are_routed_by_the_pubsub_topic_id(
    pubsub: PubSubAdmin,
) -> None:
    res = pubsub.resources()
    transport = pubsub.transport(res)
    pubsub.publisher.publish(res.topic, b"raw", origin="elsewhere").result()
    got = receive_until(transport, 1)
    assert [(m.topic, m.body, m.attributes) for m in got] == [
        (res.topic.rsplit("/", 1)[1], b"raw", {"origin": "elsewhere"})
    ]


def test_short_names_need_a_project() -> None:
    with pytest.raises(ConfigurationError, match="project"):
        PubSubTransport("jobs-sub", subscriber=object())


def test_full_paths_name_their_project() -> None:
    transport = PubSubTransport(
        "projects/acme/subscriptions/jobs-sub", "jobs", dlq_topic="jobs-dead", subscriber=object()
    )
    assert transport.topic == "projects/acme/topics/jobs"
    assert transport.dlq_topic == "projects/acme/topics/jobs-dead"


def test_ack_deadline_outside_pubsub_bounds_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="between 10 and 600"):
        PubSubTransport("projects/a/subscriptions/s", ack_deadline_s=5, subscriber=object())
