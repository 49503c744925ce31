"""The dead-letter queue API on the in-memory transport, with a real worker."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskorbit as orbit
from taskorbit.dlq import REDRIVEN_FROM_ATTR, Selection, for_transport
from taskorbit.errors import ConfigurationError, TransportError


@pytest.fixture
def transport() -> orbit.MemoryTransport:
    return orbit.MemoryTransport()


@pytest.fixture
def app(transport: orbit.MemoryTransport) -> Iterator[orbit.Orbit]:
    app = orbit.Orbit(transport, concurrency=4, ack_interval_s=0.01, poll_timeout=0.05)
    handled: list[tuple[int, int]] = []
    app.handled = handled  # type: ignore[attr-defined]

    @app.task("charge")
    def charge(n: int, ctx: orbit.Context) -> orbit.Result | None:
        if n < 0:
            return orbit.dead_letter(f"negative amount {n}")
        handled.append((n, ctx.attempt))
        return None

    @app.task("refund")
    def refund(n: int) -> orbit.Result:
        return orbit.dead_letter("refunds are disabled")

    yield app
    app.stop(5)


def dead_letter_some(app: orbit.Orbit, transport: orbit.MemoryTransport) -> None:
    app.publish("charge", -1, attributes={"customer": "c1"})
    app.publish("charge", -2)
    app.publish("refund", 3)
    app.start()
    assert transport.wait_idle(10)
    app.stop(5)
    assert len(transport.dead_letters) == 3


def test_list_shows_reason_attempts_and_topic_and_filters_by_topic_and_reason(
    app: orbit.Orbit, transport: orbit.MemoryTransport
) -> None:
    dead_letter_some(app, transport)
    dlq = for_transport(transport)
    everything = dlq.list()
    assert sorted(x.reason for x in everything) == [
        "negative amount -1",
        "negative amount -2",
        "refunds are disabled",
    ]
    assert all(x.attempts == 1 and x.time is not None for x in everything)
    assert [x.topic for x in dlq.list(selection=Selection.of(topic="refund"))] == ["refund"]
    assert len(dlq.list(selection=Selection.of(reason="NEGATIVE"))) == 2
    assert len(dlq.list(limit=1)) == 1


def test_show_finds_one_dead_letter_by_id(
    app: orbit.Orbit, transport: orbit.MemoryTransport
) -> None:
    dead_letter_some(app, transport)
    dlq = for_transport(transport)
    first = dlq.list()[0]
    shown = dlq.show(first.id)
    assert shown is not None and shown.message.body == first.message.body
    assert dlq.show("no-such-id") is None


def test_redrive_puts_a_fresh_copy_back_and_removes_it_from_the_dlq(
    app: orbit.Orbit, transport: orbit.MemoryTransport
) -> None:
    dead_letter_some(app, transport)
    dlq = for_transport(transport)
    # Fix the "bug" first: the handler now accepts negative amounts.
    app.tasks["charge"].fn = lambda n, ctx: app.handled.append((n, ctx.attempt))  # type: ignore[attr-defined]
    moved = dlq.redrive(Selection.of(reason="negative"))
    assert sorted(m.message.body for m in moved) == [b"-1", b"-2"]
    assert [x.topic for x in dlq.list()] == ["refund"]
    app.start()
    assert transport.wait_idle(10)
    assert sorted(app.handled) == [(-2, 1), (-1, 1)]  # type: ignore[attr-defined]


def test_redrive_keeps_user_attributes_and_drops_the_dead_letter_ones(
    app: orbit.Orbit, transport: orbit.MemoryTransport
) -> None:
    dead_letter_some(app, transport)
    letter = for_transport(transport).list(selection=Selection.of(reason="-1"))[0]
    copy = letter.redriven()
    assert copy.attributes == {"customer": "c1", REDRIVEN_FROM_ATTR: letter.id}
    assert copy.attempt == 1 and copy.topic == "charge"


def test_redrive_reports_the_new_id_of_each_copy_which_names_its_dead_letter(
    app: orbit.Orbit, transport: orbit.MemoryTransport
) -> None:
    dead_letter_some(app, transport)
    dlq = for_transport(transport)
    letters = dlq.list(selection=Selection.of(topic="charge"))
    moved = dlq.redrive(Selection.of(topic="charge"))
    assert [x.id for x in moved] == [x.id for x in letters]
    copies = transport.receive(10, 1.0)
    assert {m.id: m.attributes[REDRIVEN_FROM_ATTR] for m in copies} == {
        x.redriven_as: x.id for x in moved
    }
    assert all(x.redriven_as not in (None, x.id) for x in moved)
    assert all(x.redriven_as is None for x in dlq.redrive(Selection(), dry_run=True))


def test_a_dry_run_changes_nothing(app: orbit.Orbit, transport: orbit.MemoryTransport) -> None:
    dead_letter_some(app, transport)
    dlq = for_transport(transport)
    published = transport.published
    assert len(dlq.redrive(Selection(), dry_run=True)) == 3
    assert len(dlq.purge(Selection(), dry_run=True)) == 3
    assert len(dlq.list()) == 3 and transport.published == published


def test_nothing_leaves_the_dlq_when_the_copy_cannot_be_published(
    app: orbit.Orbit, transport: orbit.MemoryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_letter_some(app, transport)

    def broker_down(messages: object) -> list[str]:
        raise TransportError("broker unreachable")

    monkeypatch.setattr(transport, "publish", broker_down)
    with pytest.raises(TransportError):
        for_transport(transport).redrive(Selection())
    assert len(transport.dead_letters) == 3


def test_purge_deletes_only_what_matches(
    app: orbit.Orbit, transport: orbit.MemoryTransport
) -> None:
    dead_letter_some(app, transport)
    dlq = for_transport(transport)
    assert [x.topic for x in dlq.purge(Selection.of(topic="refund"))] == ["refund"]
    assert sorted(x.topic for x in dlq.list()) == ["charge", "charge"]


def test_a_transport_without_a_dlq_is_refused_with_a_reason() -> None:
    from taskorbit.transports.redis_pubsub import RedisPubSubTransport

    broadcast = RedisPubSubTransport(url="redis://127.0.0.1:1/0")  # connects only when used
    with pytest.raises(ConfigurationError, match="keeps no dead letters; use Redis Streams"):
        for_transport(broadcast)

    class Homemade(orbit.MemoryTransport):  # a package with no dlq module
        name = "homemade"

    with pytest.raises(ConfigurationError, match="'homemade' transport has no dead-letter queue"):
        for_transport(Homemade())


def test_a_transport_from_a_top_level_module_has_no_dead_letter_queue(tmp_path: Path) -> None:
    (tmp_path / "homebroker.py").write_text(
        "import taskorbit as orbit\n"
        "class HomeTransport(orbit.MemoryTransport):\n"
        "    name = 'home'\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        home = importlib.import_module("homebroker").HomeTransport()
    finally:
        sys.path.remove(str(tmp_path))
    with pytest.raises(ConfigurationError, match="'home' transport has no dead-letter queue"):
        for_transport(home)


def test_a_dlq_module_missing_a_library_says_so_rather_than_no_dead_letter_queue(
    tmp_path: Path,
) -> None:
    package = tmp_path / "homebroker2"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import taskorbit as orbit\n"
        "class HomeTransport(orbit.MemoryTransport):\n"
        "    name = 'home'\n"
    )
    (package / "dlq.py").write_text("import taskorbit_no_such_client_library\n")
    sys.path.insert(0, str(tmp_path))
    try:
        home = importlib.import_module("homebroker2").HomeTransport()
        with pytest.raises(ModuleNotFoundError, match="taskorbit_no_such_client_library"):
            for_transport(home)
    finally:
        sys.path.remove(str(tmp_path))
