"""One message through every step: route → attempt check → decode → handler → decide.

``process`` is plain and synchronous, with no threads, no ring and no transport,
so that a unit test can call it directly (the way Huey's ``execute`` and Dramatiq's
``process_message`` keep one place that says what happens to a message). The
runtime around it settles the :class:`Outcome` with the broker.
"""

from __future__ import annotations

import enum
import inspect
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from taskorbit.context import Context
from taskorbit.errors import DecodeError
from taskorbit.message import Action, Message, Result
from taskorbit.task import Task

logger = logging.getLogger("taskorbit.worker.pipeline")


class Verdict(enum.Enum):
    """What the runtime must do with the message at the broker."""

    ACK = "ack"
    RETRY = "retry"  # run again after Outcome.delay seconds
    DEAD_LETTER = "dead_letter"


# Enum member lookups cost as much as the rest of a no-op run on CPython 3.11, so
# the hot path reads these module constants instead.
ACK = Verdict.ACK
RETRY = Verdict.RETRY


class Outcome(msgspec.Struct):
    verdict: Verdict
    message: Message
    delay: float = 0.0
    reason: str = ""
    result: Result | None = None  # the handler's own result, for on_complete
    error: BaseException | None = None  # what the handler or codec raised, for on_error
    duration_s: float = 0.0


def process(
    message: Message,
    tasks: Mapping[str, Task[Any]],
    *,
    make_context: Callable[[Message], Context],
    rng: random.Random | None = None,
) -> Outcome:
    """Run ``message`` through its task and decide its fate. Never raises for
    anything the envelope, the codec, the payload or the handler does."""
    # The transport could not read its envelope: nothing here can fix that.
    if message.malformed is not None:
        return Outcome(
            Verdict.DEAD_LETTER, message, reason=f"malformed message: {message.malformed}"
        )
    task = tasks.get(message.topic)
    # Unknown topic: nothing will ever handle it; retrying cannot help.
    if task is None:
        known = ", ".join(sorted(tasks)) or "none"
        reason = f"unknown topic {message.topic!r}; registered topics: {known}"
        return Outcome(Verdict.DEAD_LETTER, message, reason=reason)
    policy = task.retry_policy
    if message.attempt < 1:
        reason = f"malformed message: attempt {message.attempt} (attempts are numbered from 1)"
        return Outcome(Verdict.DEAD_LETTER, message, reason=reason)
    # Redelivered more often than the policy allows: a message that crashed the
    # process on every earlier attempt ends here instead of looping forever.
    if message.attempt > policy.max_retries + 1:
        reason = (
            f"attempt {message.attempt} exceeds max_retries={policy.max_retries}"
            " (earlier attempts never settled: the worker may have crashed)"
        )
        return Outcome(Verdict.DEAD_LETTER, message, reason=reason)
    # Undecodable payload: no retry can fix the bytes.
    try:
        payload = task.decode(message.body)
    except DecodeError as exc:
        return Outcome(Verdict.DEAD_LETTER, message, reason=f"decode failed: {exc}", error=exc)
    except Exception as exc:  # a custom codec's bug, or RecursionError from deep nesting
        reason = f"decode failed: {type(exc).__name__}: {exc}"
        return Outcome(Verdict.DEAD_LETTER, message, reason=reason, error=exc)
    started = time.perf_counter()
    try:
        if task.wants_context:
            returned = task.fn(payload, make_context(message))
        else:
            returned = task.fn(payload)
    # BaseException too: a handler's SystemExit or KeyboardInterrupt ends its run,
    # not the worker thread, and its message is settled like any failure.
    except BaseException as exc:
        elapsed = time.perf_counter() - started
        outcome = _retry_or_give_up(message, task, None, f"{type(exc).__name__}: {exc}", rng)
        outcome.error = exc
        outcome.duration_s = elapsed
        return outcome
    elapsed = time.perf_counter() - started
    if returned is None:  # the common case, first; positional args build fastest
        return Outcome(ACK, message, 0.0, "", None, None, elapsed)
    outcome = _decide(message, task, returned, rng)
    outcome.duration_s = elapsed
    return outcome


def _decide(
    message: Message, task: Task[Any], returned: object, rng: random.Random | None
) -> Outcome:
    if inspect.isawaitable(returned):
        # A sync function that returned a coroutine did none of its work: say so
        # instead of acking it (and close it, so Python does not warn later).
        close = getattr(returned, "close", None)
        if close is not None:
            close()
        reason = (
            f"the handler returned {type(returned).__name__} instead of running: async "
            "handlers are not supported; make it a plain function"
        )
        return Outcome(Verdict.DEAD_LETTER, message, reason=reason)
    # A handler that returns nothing, or any value that is not a Result, is done.
    if not isinstance(returned, Result) or returned.action is Action.ACK:
        result = returned if isinstance(returned, Result) else None
        return Outcome(Verdict.ACK, message, result=result)
    if returned.action is Action.DEAD_LETTER:
        reason = returned.reason or "the handler asked for the dead-letter queue"
        return Outcome(Verdict.DEAD_LETTER, message, reason=reason, result=returned)
    reason = returned.reason or "the handler asked for a retry"
    return _retry_or_give_up(message, task, returned, reason, rng)


def _retry_or_give_up(
    message: Message, task: Task[Any], result: Result | None, reason: str, rng: random.Random | None
) -> Outcome:
    policy = task.retry_policy
    # Explicit retries count against max_retries too, or a handler that always
    # asks for one would never stop.
    if not policy.should_retry(message.attempt):
        why = (
            f"gave up after {message.attempt} attempts (max_retries={policy.max_retries}): {reason}"
        )
        return Outcome(Verdict.DEAD_LETTER, message, reason=why, result=result)
    if (
        result is not None
        and result.action is Action.RETRY_WITH_DELAY
        and result.delay is not None
        and 0 <= result.delay < math.inf  # a Result built by hand may say anything
    ):
        delay = result.delay
    else:
        delay = policy.delay(message.attempt, rng)
    return Outcome(Verdict.RETRY, message, delay=delay, reason=reason, result=result)
