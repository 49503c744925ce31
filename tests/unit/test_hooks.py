"""Hooks, the hook set that fires them, and the logging hooks (taskorbit.hooks)."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytest

from taskorbit.hooks import HOOK_EVENTS, Hooks, HookSet, LoggingHooks
from taskorbit.message import ACK, Message, Result, dead_letter


def make_message() -> Message:
    return Message(topic="email.send", body=b"{}", id="m-1", attempt=3)


class Recording(Hooks):
    def __init__(self, name: str, calls: list[tuple[str, str, tuple[Any, ...]]]) -> None:
        self.name = name
        self.calls = calls

    def on_receive(self, message: Message) -> None:
        self.calls.append((self.name, "on_receive", (message,)))

    def on_complete(self, message: Message, result: Result, duration_s: float) -> None:
        self.calls.append((self.name, "on_complete", (message, result, duration_s)))


class Exploding(Hooks):
    def on_receive(self, message: Message) -> None:
        raise RuntimeError("metrics backend is down")


def test_every_hook_method_is_a_documented_event() -> None:
    methods = {name for name, _ in inspect.getmembers(Hooks, inspect.isfunction)}
    assert set(HOOK_EVENTS) == {name for name in methods if name.startswith("on_")}
    assert len(HOOK_EVENTS) == len(set(HOOK_EVENTS))


def test_the_base_hooks_accept_every_event_and_do_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks, message = Hooks(), make_message()
    arguments: dict[str, tuple[Any, ...]] = {
        "on_receive": (message,),
        "on_drop": (message, "full"),
        "on_duplicate": (message,),
        "on_dispatch": (message,),
        "on_complete": (message, ACK, 0.1),
        "on_error": (None, RuntimeError("x")),
        "on_retry": (message, 1.0, "boom"),
        "on_dead_letter": (message, "why"),
        "on_publish": (message,),
    }
    assert set(arguments) == set(HOOK_EVENTS)
    caplog.set_level(logging.DEBUG)
    returned = {event: getattr(hooks, event)(*args) for event, args in arguments.items()}
    assert returned == dict.fromkeys(HOOK_EVENTS)
    assert vars(hooks) == {} and caplog.records == []  # nothing kept, nothing logged
    # A subclass overrides only what it needs: the base methods are never even called.
    assert [e for e in HOOK_EVENTS if HookSet([hooks]).wants(e)] == []


def test_fire_calls_overriding_hooks_in_the_order_they_were_added() -> None:
    calls: list[tuple[str, str, tuple[Any, ...]]] = []
    hook_set = HookSet([Recording("first", calls), Recording("second", calls)])
    message = make_message()
    hook_set.fire("on_complete", message, ACK, 0.25)
    assert calls == [
        ("first", "on_complete", (message, ACK, 0.25)),
        ("second", "on_complete", (message, ACK, 0.25)),
    ]


def test_wants_is_true_only_for_events_some_hook_overrides() -> None:
    hook_set = HookSet([Recording("r", [])])
    assert hook_set.wants("on_receive")
    assert hook_set.wants("on_complete")
    assert not hook_set.wants("on_dispatch")
    assert not HookSet().wants("on_receive")


def test_events_nobody_overrides_call_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    called = []
    monkeypatch.setattr(Hooks, "on_dispatch", lambda self, message: called.append(message))
    hook_set = HookSet([Recording("r", [])])  # built while the base method is patched
    hook_set.fire("on_dispatch", make_message())
    assert called == []


def test_hooks_added_later_are_fired_too() -> None:
    calls: list[tuple[str, str, tuple[Any, ...]]] = []
    hook_set = HookSet()
    hook_set.add(Recording("late", calls))
    hook_set.fire("on_receive", make_message())
    assert [name for name, _, _ in calls] == ["late"]
    assert len(hook_set) == 1


def test_a_method_assigned_on_an_instance_counts_as_an_override() -> None:
    seen = []
    hooks = Hooks()
    hooks.on_drop = lambda message, reason: seen.append(reason)  # type: ignore[method-assign]
    hook_set = HookSet([hooks])
    hook_set.fire("on_drop", make_message(), "ring full")
    assert seen == ["ring full"]


def test_a_failing_hook_is_logged_with_its_traceback_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[tuple[str, str, tuple[Any, ...]]] = []
    hook_set = HookSet([Exploding(), Recording("after", calls)])
    with caplog.at_level(logging.ERROR, logger="taskorbit.hooks"):
        hook_set.fire("on_receive", make_message())
    assert [name for name, _, _ in calls] == ["after"]
    (record,) = caplog.records
    assert record.name == "taskorbit.hooks"
    assert "Exploding.on_receive" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


def test_a_hook_raising_keyboard_interrupt_is_not_swallowed() -> None:
    class Interrupting(Hooks):
        def on_receive(self, message: Message) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        HookSet([Interrupting()]).fire("on_receive", make_message())


def test_firing_an_unknown_event_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown hook event 'on_recieve'"):
        HookSet().fire("on_recieve", make_message())


# -- LoggingHooks ------------------------------------------------------------------------


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="taskorbit.events")
    return caplog


def fire_all(hook_set: HookSet, message: Message) -> None:
    hook_set.fire("on_receive", message)
    hook_set.fire("on_duplicate", message)
    hook_set.fire("on_dispatch", message)
    hook_set.fire("on_complete", message, dead_letter("bad input"), 0.5)
    try:
        raise ValueError("handler exploded")
    except ValueError as e:
        hook_set.fire("on_error", message, e)
    hook_set.fire("on_retry", message, 4.0, "handler exploded")
    hook_set.fire("on_dead_letter", message, "too many attempts")
    hook_set.fire("on_drop", message, "ring full")
    hook_set.fire("on_publish", message)


def test_logging_hooks_log_each_event_at_its_level(logged: pytest.LogCaptureFixture) -> None:
    fire_all(HookSet([LoggingHooks()]), make_message())
    levels = [(r.levelname, r.getMessage().split(" ")[0]) for r in logged.records]
    assert levels == [
        ("DEBUG", "received"),
        ("DEBUG", "duplicate"),
        ("DEBUG", "dispatching"),
        ("DEBUG", "completed"),
        ("ERROR", "email.send"),
        ("INFO", "retrying"),
        ("WARNING", "dead-lettered"),
        ("WARNING", "dropped"),
        ("DEBUG", "publishing"),
    ]


def test_logging_hooks_put_topic_id_and_attempt_in_extra(logged: pytest.LogCaptureFixture) -> None:
    fire_all(HookSet([LoggingHooks()]), make_message())
    for record in logged.records:
        fields = (record.__dict__[name] for name in ("topic", "message_id", "attempt"))
        assert tuple(fields) == ("email.send", "m-1", 3)
    retry = next(r for r in logged.records if r.levelname == "INFO")
    assert (retry.__dict__["delay_s"], retry.__dict__["reason"]) == (4.0, "handler exploded")


def test_logging_hooks_attach_the_handler_traceback_to_errors(
    logged: pytest.LogCaptureFixture,
) -> None:
    fire_all(HookSet([LoggingHooks()]), make_message())
    error = next(r for r in logged.records if r.levelname == "ERROR")
    assert error.exc_info is not None and error.exc_info[0] is ValueError
    assert "failed on attempt 3: handler exploded" in error.getMessage()


def test_logging_hooks_report_worker_errors_without_a_message(
    logged: pytest.LogCaptureFixture,
) -> None:
    LoggingHooks().on_error(None, ConnectionError("broker unreachable"))
    (record,) = logged.records
    assert record.levelname == "ERROR"
    assert "broker unreachable" in record.getMessage()


def test_logging_hooks_use_the_logger_they_are_given(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="myapp.queue")
    hooks = LoggingHooks(logging.getLogger("myapp.queue"))
    fire_all(HookSet([hooks]), make_message())
    assert {r.name for r in caplog.records} == {"myapp.queue"}
    assert "DEBUG" not in {r.levelname for r in caplog.records}
