"""Hooks, the hook set that fires them, and the logging hooks (taskorbit.hooks)."""

from __future__ import annotations

import inspect
import logging
import threading
import traceback
from typing import Any

import pytest

import taskorbit as orbit
from taskorbit.errors import ConfigurationError, DecodeError, TransportError
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


def failure(text: str = "handler exploded") -> ValueError:
    """An exception as a handler's run leaves it: raised, with its traceback."""
    try:
        raise ValueError(text)
    except ValueError as e:
        return e


def fire_all(hook_set: HookSet, message: Message) -> None:
    hook_set.fire("on_receive", message)
    hook_set.fire("on_duplicate", message)
    hook_set.fire("on_dispatch", message)
    hook_set.fire("on_complete", message, dead_letter("bad input"), 0.5)
    hook_set.fire("on_error", message, failure())
    hook_set.fire("on_retry", message, 4.0, "ValueError: handler exploded")
    hook_set.fire("on_dead_letter", message, "too many attempts")
    hook_set.fire("on_drop", message, "ring full")
    hook_set.fire("on_publish", message)


def test_logging_hooks_log_each_event_at_its_level(logged: pytest.LogCaptureFixture) -> None:
    fire_all(HookSet([LoggingHooks()]), make_message())
    levels = [(r.levelname, r.getMessage().split(" ")[2]) for r in logged.records]
    assert levels == [
        ("DEBUG", "received"),
        ("DEBUG", "duplicate"),
        ("DEBUG", "dispatching"),
        ("DEBUG", "completed"),
        ("ERROR", "failed"),
        ("INFO", "retrying"),
        ("WARNING", "dead-lettered:"),
        ("WARNING", "dropped:"),
        ("DEBUG", "publishing"),
    ]
    assert all(r.getMessage().startswith("email.send m-1 ") for r in logged.records)


def test_logging_hooks_put_topic_id_and_attempt_in_extra(logged: pytest.LogCaptureFixture) -> None:
    fire_all(HookSet([LoggingHooks()]), make_message())
    for record in logged.records:
        fields = (record.__dict__[name] for name in ("topic", "message_id", "attempt"))
        assert tuple(fields) == ("email.send", "m-1", 3)
    retry = next(r for r in logged.records if r.levelname == "INFO")
    assert (retry.__dict__["delay_s"], retry.__dict__["reason"]) == (
        4.0,
        "ValueError: handler exploded",
    )


def test_logging_hooks_attach_the_handler_traceback_to_errors(
    logged: pytest.LogCaptureFixture,
) -> None:
    fire_all(HookSet([LoggingHooks()]), make_message())
    error = next(r for r in logged.records if r.levelname == "ERROR")
    assert error.exc_info is not None and error.exc_info[0] is ValueError
    assert error.exc_info[2] is not None  # the traceback itself, not only the type
    assert error.getMessage() == "email.send m-1 failed on attempt 3: ValueError: handler exploded"


def test_logging_hooks_say_the_attempt_out_of_how_many_and_what_comes_next(
    logged: pytest.LogCaptureFixture,
) -> None:
    hooks = HookSet([LoggingHooks(max_attempts={"email.send": 11}.get)])
    message = Message(topic="email.send", body=b"{}", id="m-1", attempt=1)
    hooks.fire("on_error", message, failure("card declined"))
    hooks.fire("on_retry", message, 2.0, "ValueError: card declined")
    lines = [r.getMessage() for r in logged.records]
    assert lines == [
        "email.send m-1 failed on attempt 1 of 11: ValueError: card declined",
        "email.send m-1 retrying in 2.0 s (attempt 2 of 11)",
    ]


def test_logging_hooks_give_an_explicit_retry_its_reason(logged: pytest.LogCaptureFixture) -> None:
    LoggingHooks().on_retry(make_message(), 0.25, "rate limited by the mail provider")
    (record,) = logged.records
    assert record.getMessage() == (
        "email.send m-1 retrying in 0.25 s (attempt 4): rate limited by the mail provider"
    )


def test_logging_hooks_show_a_message_s_traceback_at_its_first_failure_only(
    logged: pytest.LogCaptureFixture,
) -> None:
    hooks = LoggingHooks()
    for attempt in (1, 2, 3):
        for message_id in ("m-1", "m-2"):
            message = Message(topic="t", body=b"", id=message_id, attempt=attempt)
            hooks.on_error(message, failure())
    with_traceback = [(r.message_id, r.attempt) for r in logged.records if r.exc_info]
    assert with_traceback == [("m-1", 1), ("m-2", 1)]
    assert len(logged.records) == 6


@pytest.mark.parametrize(("mode", "tracebacks"), [("always", 3), ("never", 0), ("first", 1)])
def test_logging_hooks_tracebacks_option(
    logged: pytest.LogCaptureFixture, mode: str, tracebacks: int
) -> None:
    hooks = LoggingHooks(tracebacks=mode)
    for attempt in (1, 2, 3):
        hooks.on_error(Message(topic="t", body=b"", id="m-1", attempt=attempt), failure())
    assert len(logged.records) == 3
    assert len([r for r in logged.records if r.exc_info]) == tracebacks


def test_logging_hooks_refuse_an_unknown_tracebacks_mode() -> None:
    with pytest.raises(ConfigurationError, match="tracebacks must be one of first, always, never"):
        LoggingHooks(tracebacks="sometimes")


def test_logging_hooks_log_a_handler_that_returned_nothing_as_an_ack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The pipeline passes result=None for a handler that returned None. Before, the
    # hook read None.action, so every successful message logged a hook failure.
    caplog.set_level(logging.DEBUG)
    HookSet([LoggingHooks()]).fire("on_complete", make_message(), None, 0.002)
    (record,) = caplog.records
    assert (record.name, record.getMessage()) == (
        "taskorbit.events",
        "email.send m-1 completed in 0.002 s: ack",
    )


def test_logging_hooks_leave_an_undecodable_payload_to_its_dead_letter_warning(
    logged: pytest.LogCaptureFixture,
) -> None:
    hooks, message = HookSet([LoggingHooks()]), make_message()
    hooks.fire("on_error", message, DecodeError("malformed JSON: truncated"))
    hooks.fire("on_dead_letter", message, "decode failed: malformed JSON: truncated")
    (record,) = logged.records
    assert record.levelname == "WARNING" and record.exc_info is None
    assert record.getMessage() == (
        "email.send m-1 dead-lettered: decode failed: malformed JSON: truncated"
    )


def test_logging_hooks_leave_broker_and_worker_errors_to_the_component_that_logs_them(
    logged: pytest.LogCaptureFixture,
) -> None:
    LoggingHooks().on_error(None, ConnectionError("broker unreachable"))
    LoggingHooks().on_error(make_message(), TransportError("ack refused"))
    assert [r.levelname for r in logged.records] == ["DEBUG", "DEBUG"]
    assert "broker unreachable" in logged.records[0].getMessage()
    assert "email.send m-1: ack refused" in logged.records[1].getMessage()


def test_logging_hooks_without_debug_events_leave_the_hot_path_alone() -> None:
    hook_set = HookSet([LoggingHooks(debug_events=False)])
    wanted = [event for event in HOOK_EVENTS if hook_set.wants(event)]
    assert wanted == ["on_drop", "on_error", "on_retry", "on_dead_letter"]


def test_logging_hooks_use_the_logger_they_are_given(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="myapp.queue")
    hooks = LoggingHooks(logging.getLogger("myapp.queue"))
    fire_all(HookSet([hooks]), make_message())
    assert {r.name for r in caplog.records} == {"myapp.queue"}
    assert "DEBUG" not in {r.levelname for r in caplog.records}


# -- hooks on a running app ------------------------------------------------------------------


class ErrorsSeen(Hooks):
    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.done = threading.Event()

    def on_error(self, message: Message | None, error: BaseException) -> None:
        self.errors.append(error)

    def on_dead_letter(self, message: Message, reason: str) -> None:
        self.done.set()


def test_on_error_receives_the_handler_s_exception_with_its_traceback() -> None:
    seen = ErrorsSeen()
    app = orbit.Orbit(hooks=[seen])

    @app.task("charge", max_retries=0)
    def charge(amount: int) -> None:
        raise ValueError(f"negative amount {amount}")

    app.publish("charge", -5)
    with app:
        assert seen.done.wait(10)
    (error,) = seen.errors
    frames = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
    assert frames[-1] == "charge"
    assert str(error) == "negative amount -5"


def test_an_app_logs_no_message_events_unless_asked(caplog: pytest.LogCaptureFixture) -> None:
    # LoggingHooks are the worker command's default; a library user adds them.
    seen = ErrorsSeen()
    app = orbit.Orbit(hooks=[seen])

    @app.task("charge", max_retries=0)
    def charge(amount: int) -> None:
        raise ValueError("declined")

    caplog.set_level(logging.DEBUG, logger="taskorbit.events")
    app.publish("charge", 1)
    with app:
        assert seen.done.wait(10)
    assert [r for r in caplog.records if r.name == "taskorbit.events"] == []


def test_a_logged_traceback_starts_at_the_handler_not_in_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = orbit.Orbit(hooks=[orbit.LoggingHooks()], ack_interval_s=0.01)

    def broken(n: int) -> None:
        raise ValueError("boom")

    app.handle("t", broken, max_retries=0)
    with caplog.at_level(logging.ERROR, logger="taskorbit"), app:
        app.publish("t", 1)
        assert app.transport.wait_idle(10)  # type: ignore[attr-defined]
    [record] = [r for r in caplog.records if r.exc_info]
    formatted = logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
    assert "pipeline.py" not in formatted
    assert 'in broken\n    raise ValueError("boom")' in formatted
