"""The settlement state machine (tests/settlement_machine.py) against Google's
Pub/Sub emulator: a subscription with a dead-letter policy (the broker counts
deliveries), ordering keys, and a DLQ topic."""

from __future__ import annotations

import pytest

import taskorbit as orbit
from taskorbit.transports.pubsub import PubSubTransport
from tests.integration.pubsub.conftest import PubSubAdmin, Resources
from tests.settlement_machine import Backend, run_machine

pytestmark = pytest.mark.integration


def test_the_worker_settles_every_message_exactly_once_on_pubsub(
    pubsub: PubSubAdmin, needs_emulator: None
) -> None:
    made: dict[int, Resources] = {}

    def make_transport(ordered: bool) -> orbit.Transport:
        res = pubsub.resources(dead_letter_policy=True, ordering=ordered)
        transport = pubsub.transport(res, dlq_topic=res.dlq_topic, ordered=ordered)
        made[id(transport)] = res
        return transport

    def write_broken(transport: orbit.Transport) -> None:
        assert isinstance(transport, PubSubTransport)
        pubsub.publish_raw(
            made[id(transport)],
            b"{}",
            **{
                "taskorbit-topic": "job",
                "taskorbit-not-before": "inf",
            },
        )

    run_machine(
        Backend(
            name="pubsub",
            make_transport=make_transport,
            write_broken=write_broken,
            examples=6,
            drain_timeout_s=60.0,
            quiet_s=1.0,
        )
    )
