"""The contract every transport must pass.

A transport's test module subclasses :class:`TransportContract` and provides the
``transport`` fixture (a fresh transport on fresh queue names, with a short lease
where the transport has one) and ``read_dead_letters``. Capability flags on the
transport class skip what it does not claim, the way CPython runs one test class
against its C and Python queues.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from taskorbit.message import Message
from taskorbit.transports.base import Transport


def receive_until(
    transport: Transport, count: int, timeout: float = 10.0, batch: int = 10
) -> list[Message]:
    """Receive until ``count`` messages arrived or ``timeout`` passed."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        want = min(batch, transport.max_batch, count - len(got))
        got.extend(
            transport.receive(want, timeout=min(1.0, max(0.05, deadline - time.monotonic())))
        )
    return got


def new_message(topic: str = "contract.topic", **attributes: str) -> Message:
    return Message(topic=topic, body=uuid.uuid4().hex.encode(), attributes=dict(attributes))


@dataclass(frozen=True)
class BrokenEnvelope:
    """One message with a broken envelope, written to the broker the way a foreign
    or buggy producer would (``XADD stream * foo bar``, an SQS attempt attribute of
    ``"two"``). ``field`` is what the malformed reason must name."""

    name: str
    write: Callable[[], None]
    field: str


class TransportContract:
    """Shared behaviour of every transport. Subclasses supply the fixtures."""

    @pytest.fixture
    def transport(self) -> Transport:  # pragma: no cover - overridden
        raise NotImplementedError

    @pytest.fixture
    def read_dead_letters(self) -> Callable[[], list[Message]]:  # pragma: no cover
        raise NotImplementedError

    @pytest.fixture
    def broken_envelopes(self, transport: Transport) -> list[BrokenEnvelope]:
        """Raw writers of broken envelopes; a transport with no wire format of its
        own (memory) has none."""
        return []

    @pytest.fixture
    def second_subscriber(self, transport: Transport) -> Transport | None:
        """Another consumer group / subscription of the same topic, or None where
        the transport has no such thing."""
        return None

    def test_published_message_is_received_with_topic_body_and_attributes(
        self, transport: Transport
    ) -> None:
        sent = new_message(color="blue")
        ids = transport.publish([sent])
        got = receive_until(transport, 1)
        assert len(ids) == 1 and ids[0]
        assert [(m.topic, m.body) for m in got] == [(sent.topic, sent.body)]
        assert got[0].attributes.get("color") == "blue"
        assert got[0].attempt == 1
        transport.ack(got)

    def test_receive_returns_no_more_than_asked(self, transport: Transport) -> None:
        transport.publish([new_message() for _ in range(5)])
        time.sleep(0.2)
        first = transport.receive(2, timeout=2.0)
        assert 1 <= len(first) <= 2
        rest = receive_until(transport, 5 - len(first))
        assert len(first) + len(rest) == 5
        transport.ack(first + rest)

    def test_receive_on_an_empty_queue_returns_nothing_after_the_timeout(
        self, transport: Transport
    ) -> None:
        started = time.monotonic()
        assert transport.receive(10, timeout=0.5) == []
        assert time.monotonic() - started < 5.0

    def test_acked_message_is_not_redelivered(self, transport: Transport) -> None:
        if not transport.acknowledges:
            pytest.skip(f"{transport.name} does not acknowledge")
        transport.publish([new_message()])
        got = receive_until(transport, 1)
        assert transport.ack(got) == []
        wait = min(transport.lease_s, 3.0) + 0.5
        assert receive_until(transport, 1, timeout=wait) == []

    def test_nack_redelivers_at_once_carrying_the_attempt_it_was_given(
        self, transport: Transport
    ) -> None:
        if not transport.acknowledges:
            pytest.skip(f"{transport.name} does not acknowledge")
        sent = new_message()
        transport.publish([sent])
        first = receive_until(transport, 1)
        first_attempt = first[0].attempt
        first[0].attempt += 1  # what the runtime does before it hands a retry back
        transport.nack(first, delay=0.0)
        again = receive_until(transport, 1, timeout=10.0)
        assert [m.body for m in again] == [sent.body]
        assert again[0].attempt == first_attempt + 1
        again[0].attempt += 1
        transport.nack(again, delay=0.0)
        third = receive_until(transport, 1, timeout=10.0)
        assert [m.attempt for m in third] == [first_attempt + 2]
        transport.ack(third)

    def test_a_hand_back_without_a_run_keeps_the_attempt(self, transport: Transport) -> None:
        if not transport.acknowledges:
            pytest.skip(f"{transport.name} does not acknowledge")
        sent = new_message()
        transport.publish([sent])
        first = receive_until(transport, 1)
        first[0].attempt += 1
        transport.nack(first, delay=0.0)  # a retry: attempt 2
        again = receive_until(transport, 1, timeout=10.0)
        transport.nack(again, delay=0.0)  # a shutdown hand-back: still attempt 2
        third = receive_until(transport, 1, timeout=10.0)
        assert [m.body for m in third] == [sent.body]
        assert third[0].attempt == again[0].attempt == 2
        transport.ack(third)

    def test_broken_envelopes_are_received_as_malformed_beside_good_neighbours(
        self,
        transport: Transport,
        broken_envelopes: list[BrokenEnvelope],
        read_dead_letters: Callable[[], list[Message]],
    ) -> None:
        if not broken_envelopes:
            pytest.skip(f"{transport.name} has no wire format of its own")
        before, after = new_message(), new_message()
        transport.publish([before])
        for broken in broken_envelopes:
            broken.write()
        transport.publish([after])
        got = receive_until(transport, 2 + len(broken_envelopes), batch=100)
        good = [m for m in got if m.malformed is None]
        bad = [m for m in got if m.malformed is not None]
        assert sorted(m.body for m in good) == sorted([before.body, after.body])
        assert len(bad) == len(broken_envelopes), [m.malformed for m in bad]
        for broken in broken_envelopes:
            assert any(broken.field in (m.malformed or "") for m in bad), (
                f"no malformed reason names {broken.field!r} ({broken.name}): "
                f"{[m.malformed for m in bad]}"
            )
        for m in bad:
            transport.dead_letter(m, f"malformed envelope: {m.malformed}")
        assert transport.ack(good) == []
        dead = read_dead_letters()
        assert len(dead) == len(broken_envelopes)
        reasons = [d.attributes.get("taskorbit-dlq-reason", "") for d in dead]
        assert all(r.startswith("malformed envelope: ") for r in reasons), reasons
        wait = min(transport.lease_s, 3.0) + 0.5
        assert receive_until(transport, 1, timeout=wait) == []

    def test_a_retry_reaches_only_the_subscriber_that_handed_it_back(
        self, transport: Transport, second_subscriber: Transport | None
    ) -> None:
        if second_subscriber is None:
            pytest.skip(f"{transport.name} has no second subscriber to check")
        sent = new_message()
        transport.publish([sent])
        mine = receive_until(transport, 1)
        theirs = receive_until(second_subscriber, 1)
        assert [m.body for m in theirs] == [sent.body]
        assert second_subscriber.ack(theirs) == []
        mine[0].attempt += 1
        transport.nack(mine, delay=0.0)
        again = receive_until(transport, 1)
        assert [m.body for m in again] == [sent.body]
        transport.nack(again, delay=0.5)  # a hand-back with a delay as well
        last = receive_until(transport, 1, timeout=5.0)
        assert [m.body for m in last] == [sent.body]
        assert transport.ack(last) == []
        # The other subscriber saw the message once, and neither copy since.
        wait = min(second_subscriber.lease_s, 3.0) + 1.0
        assert receive_until(second_subscriber, 1, timeout=wait) == []

    def test_nack_with_delay_redelivers_after_the_delay(self, transport: Transport) -> None:
        if not transport.acknowledges:
            pytest.skip(f"{transport.name} does not acknowledge")
        sent = new_message()
        transport.publish([sent])
        first = receive_until(transport, 1)
        nacked_at = time.monotonic()
        transport.nack(first, delay=2.0)
        assert receive_until(transport, 1, timeout=1.0) == []
        again = receive_until(transport, 1, timeout=10.0)
        assert time.monotonic() - nacked_at >= 1.9
        assert [m.body for m in again] == [sent.body]
        transport.ack(again)

    def test_message_published_with_not_before_is_not_delivered_early(
        self, transport: Transport
    ) -> None:
        if not transport.acknowledges:
            pytest.skip(f"{transport.name} does not delay")
        sent = new_message()
        sent.not_before = time.time() + 2.0
        transport.publish([sent])
        got = receive_until(transport, 1, timeout=1.0)
        # A transport may deliver early as long as it marks not_before; the runtime
        # re-delays what is not yet due. It must not lose the ETA.
        assert all(m.not_before is not None and m.not_before > time.time() for m in got)
        if got:
            transport.nack(got, delay=max(0.0, got[0].not_before - time.time()))  # type: ignore[operator]
        later = receive_until(transport, 1, timeout=10.0)
        assert [m.body for m in later] == [sent.body]
        transport.ack(later)

    def test_dead_letter_keeps_body_reason_and_attempts(
        self, transport: Transport, read_dead_letters: Callable[[], list[Message]]
    ) -> None:
        if not transport.acknowledges:
            pytest.skip(f"{transport.name} has no dead-letter queue")
        sent = new_message(color="red")
        transport.publish([sent])
        got = receive_until(transport, 1)
        attempt = got[0].attempt
        transport.dead_letter(got[0], "handler said no")
        dead = read_dead_letters()
        assert [m.body for m in dead] == [sent.body]
        assert dead[0].topic == sent.topic
        assert dead[0].attributes.get("color") == "red"
        assert "handler said no" in dead[0].attributes.get("taskorbit-dlq-reason", "")
        assert dead[0].attributes.get("taskorbit-dlq-attempts") == str(attempt)
        assert receive_until(transport, 1, timeout=min(transport.lease_s, 3.0) + 0.5) == []

    def test_extend_keeps_a_message_invisible_past_its_lease(self, transport: Transport) -> None:
        if not transport.needs_lease:
            pytest.skip(f"{transport.name} needs no lease")
        transport.publish([new_message()])
        got = receive_until(transport, 1)
        held_until = time.monotonic() + transport.lease_s * 2.5
        while time.monotonic() < held_until:
            transport.extend(got, transport.lease_s)
            assert transport.receive(10, timeout=transport.lease_s / 3) == []
        transport.ack(got)
