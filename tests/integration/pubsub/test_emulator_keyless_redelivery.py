"""A behaviour of Google's Pub/Sub emulator that Pub/Sub itself does not have.

On a subscription with message ordering enabled, the emulator keeps messages
without an ordering key in one ordered backlog of their own (key ""), and when the
ack deadline of one of them runs out it redelivers that message and every keyless
message delivered after it, acknowledged ones included: the rule Pub/Sub applies
within one ordering key. Pub/Sub does not order messages with an empty ordering key
(https://cloud.google.com/pubsub/docs/ordering, "Messages with an empty ordering key
are not ordered"), so none of this happens there.

This is what the chaos runs saw: a killed worker's messages ran out their deadline
and brought back everything the surviving workers had acked meanwhile (see
docs/transports/pubsub.md, "Testing against the emulator"). A hand-back with a delay
(``ModifyAckDeadline`` > 0) runs out the same way; a hand-back at once (deadline 0)
does not. The acknowledge calls themselves succeed: nothing in the transport can
tell. If a new emulator stops doing this, this test fails: update the docs.
"""

from __future__ import annotations

import pytest

from taskorbit.message import Message
from tests.contract import receive_until
from tests.integration.pubsub.conftest import PubSubAdmin, read_all

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("ordering", [True, False], ids=["ordering-enabled", "no-ordering"])
def test_a_keyless_message_running_out_its_deadline_brings_back_later_acked_ones(
    pubsub: PubSubAdmin, needs_emulator: None, ordering: bool
) -> None:
    res = pubsub.resources(ordering=ordering)
    holder, peer = pubsub.transport(res), pubsub.transport(res)  # two consumers
    holder.publish([Message("work", str(i).encode()) for i in range(6)])  # no ordering key
    [held] = receive_until(holder, 1)
    acked = receive_until(peer, 5)  # all delivered after the held one
    assert sorted(m.body for m in [held, *acked]) == [str(i).encode() for i in range(6)]
    assert peer.ack(acked) == []  # every acknowledge succeeded
    holder.nack([held], delay=1.0)  # in place: its deadline runs out in 1 s
    back = read_all(peer)
    assert held.id in {m.id for m in back}
    came_back = sorted(m.body for m in back if m.id != held.id)
    if ordering:
        expected = sorted(m.body for m in acked)
        assert came_back == expected, "the emulator changed: update the docs (see the docstring)"
    else:
        assert came_back == []
