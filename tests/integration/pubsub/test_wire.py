"""The Pub/Sub transport's pure parts: names, attempt counts, sizes, byte budget.
No server needed."""

from __future__ import annotations

import threading

import pytest

from taskorbit.errors import ConfigurationError, PayloadTooLargeError
from taskorbit.message import Message
from taskorbit.transports.pubsub.flow import ByteBudget
from taskorbit.transports.pubsub.wire import (
    MAX_MESSAGE_BYTES,
    attempt_of,
    check_size,
    is_copy_for_another,
    read_envelope,
    resource_path,
    user_attributes,
    wire_attributes,
)


def test_short_ids_become_full_paths_in_the_given_project() -> None:
    assert resource_path("jobs", "topics", "acme") == "projects/acme/topics/jobs"


def test_a_topic_path_is_not_accepted_as_a_subscription() -> None:
    with pytest.raises(ConfigurationError, match="not a subscription path"):
        resource_path("projects/acme/topics/jobs", "subscriptions", None)


def test_the_project_can_come_from_google_cloud_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "from-env")
    assert resource_path("jobs", "topics", None) == "projects/from-env/topics/jobs"


def test_wire_attributes_carry_topic_not_before_and_attempt_and_round_trip() -> None:
    message = Message("email.send", b"{}", {"color": "red"}, not_before=1_800_000_000.25)
    wire = wire_attributes(message, attempt=3)
    assert wire == {
        "color": "red",
        "taskorbit-topic": "email.send",
        "taskorbit-not-before": "1800000000.25",
        "taskorbit-attempt": "3",
    }
    assert user_attributes(wire) == {"color": "red"}
    envelope = read_envelope(wire)
    assert (envelope.not_before, envelope.base_attempt, envelope.malformed) == (
        1.80000000025e9,
        3,
        None,
    )


def test_a_retry_copy_names_its_subscription_and_only_others_skip_it() -> None:
    mine, theirs = "projects/p/subscriptions/a", "projects/p/subscriptions/b"
    wire = wire_attributes(Message("t", b""), attempt=2, for_subscription=mine)
    assert wire["taskorbit-for-subscription"] == mine
    assert user_attributes(wire) == {}
    assert not is_copy_for_another(wire, mine)
    assert is_copy_for_another(wire, theirs)
    # Forwarded to a dead-letter topic by Pub/Sub: whoever reads that topic sees it.
    forwarded = {**wire, "CloudPubSubDeadLetterSourceSubscription": "a"}
    assert not is_copy_for_another(forwarded, theirs)
    assert not is_copy_for_another({}, theirs)


@pytest.mark.parametrize(
    ("attribute", "raw"),
    [
        ("taskorbit-not-before", "inf"),
        ("taskorbit-not-before", "-inf"),
        ("taskorbit-not-before", "nan"),
        ("taskorbit-not-before", "soon"),
        ("taskorbit-not-before", ""),
        ("taskorbit-attempt", "two"),
        ("taskorbit-attempt", "0"),
        ("taskorbit-attempt", "-1"),
        ("taskorbit-attempt", "1.5"),
        ("taskorbit-attempt", " 2"),
        ("taskorbit-attempt", "9" * 40),
    ],
)
def test_an_unreadable_taskorbit_attribute_is_named_not_guessed(attribute: str, raw: str) -> None:
    envelope = read_envelope({attribute: raw, "taskorbit-topic": "t"})
    assert envelope.malformed is not None
    assert envelope.malformed.startswith(f"{attribute} is ")
    assert (envelope.not_before, envelope.base_attempt) == (None, 1)


def test_every_unreadable_attribute_is_named() -> None:
    envelope = read_envelope({"taskorbit-not-before": "soon", "taskorbit-attempt": "two"})
    assert envelope.malformed is not None
    assert "taskorbit-not-before" in envelope.malformed
    assert "taskorbit-attempt" in envelope.malformed


def test_a_long_unreadable_value_is_quoted_in_part() -> None:
    envelope = read_envelope({"taskorbit-attempt": "x" * 1000})
    assert envelope.malformed == f"taskorbit-attempt is '{'x' * 60}...', not a whole number from 1"


def test_attempt_without_a_broker_count_is_the_carried_attribute() -> None:
    counted = attempt_of(
        3,
        0,
        publish_time=0.0,
        not_before=None,
        hop_s=600,
        redelay_threshold_s=1,
    )
    assert counted == 3


def test_attempt_with_a_broker_count_adds_the_deliveries_of_this_copy() -> None:
    counted = attempt_of(
        3,
        2,
        publish_time=0.0,
        not_before=None,
        hop_s=600,
        redelay_threshold_s=1,
    )
    assert counted == 4


def test_hops_spent_waiting_for_not_before_are_not_attempts() -> None:
    # 1,500 s of waiting in hops of 600 s: three redeliveries that ran nothing.
    counted = attempt_of(
        2,
        4,
        publish_time=100.0,
        not_before=1600.0,
        hop_s=600,
        redelay_threshold_s=1,
    )
    assert counted == 2


def test_size_check_names_the_limit() -> None:
    check_size("projects/p/topics/t", b"x" * (MAX_MESSAGE_BYTES - 1000), {}, "")
    with pytest.raises(PayloadTooLargeError, match="10,000,000 bytes"):
        check_size("projects/p/topics/t", b"x" * MAX_MESSAGE_BYTES, {}, "")


def test_byte_budget_waits_until_held_bytes_are_released() -> None:
    budget = ByteBudget(100)
    budget.hold([("a", 60), ("b", 60)])
    assert budget.held_bytes == 120
    assert not budget.wait_for_room(0.05)
    releaser = threading.Timer(0.1, budget.release, args=(["a"],))
    releaser.start()
    assert budget.wait_for_room(5.0)
    releaser.join()
    budget.release(["a", "b"])  # "a" again counts once
    assert budget.held_bytes == 0
