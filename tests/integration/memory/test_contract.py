from __future__ import annotations

from collections.abc import Callable

import pytest

from taskorbit.message import Message
from taskorbit.transports.memory import MemoryTransport
from tests.contract import TransportContract


class TestMemoryTransportContract(TransportContract):
    @pytest.fixture
    def transport(self) -> MemoryTransport:
        return MemoryTransport()

    @pytest.fixture
    def read_dead_letters(self, transport: MemoryTransport) -> Callable[[], list[Message]]:
        return lambda: list(transport.dead_letters)
