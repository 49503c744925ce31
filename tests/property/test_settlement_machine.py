"""The settlement state machine (tests/settlement_machine.py) on the in-memory
transport: the most examples, since nothing but the worker costs time here."""

from __future__ import annotations

import taskorbit as orbit
from taskorbit.message import Message
from tests.ledger import LedgerTransport
from tests.settlement_machine import Backend, run_machine


class MarksBrokenEnvelopes(LedgerTransport):
    """The memory transport has no wire format to break: it marks the envelope of
    a body written by ``write_broken`` malformed on receive, the way a broker's
    transport reports an entry it cannot read."""

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        got = super().receive(max_messages, timeout)
        for m in got:
            if m.body == b"broken envelope":
                m.malformed = "field 'attempt' is 'abc', not a positive integer"
        return got


def write_broken(transport: orbit.Transport) -> None:
    transport.publish([Message(topic="job", body=b"broken envelope")])


MEMORY = Backend(
    name="memory",
    make_transport=lambda ordered: orbit.MemoryTransport(ordered=ordered),
    write_broken=write_broken,
    examples=25,
    ledger=MarksBrokenEnvelopes,
    drain_timeout_s=5.0,
    quiet_s=0.05,
)


def test_the_worker_settles_every_message_exactly_once_on_memory() -> None:
    run_machine(MEMORY)
