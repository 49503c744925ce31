"""Micro benchmarks of the per-message building blocks: decode, hooks, claims, timers.

Run with ``.venv/bin/python -m pytest benchmarks/test_codec_bench.py --benchmark-only``.
Each measures one call on the hot path; the stdlib ``json`` baseline sits beside
the typed decoder for comparison.
"""

from __future__ import annotations

import json
import random
from typing import Any

import msgspec
import pytest

from taskorbit.codec import JSON, MSGPACK, make_decoder
from taskorbit.hooks import Hooks, HookSet
from taskorbit.idempotency import MemoryStore
from taskorbit.message import Message
from taskorbit.worker.timerwheel import TimerWheel


class EmailPayload(msgspec.Struct):
    to: str
    subject: str
    body: str = ""


PAYLOAD = EmailPayload(to="someone@example.com", subject="Your order", body="x" * 200)


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=lambda c: c.name)
def test_decode_struct(benchmark: Any, codec: Any) -> None:
    decode = make_decoder(EmailPayload, codec)
    body = codec.encode(PAYLOAD)
    assert benchmark(decode, body) == PAYLOAD


def test_decode_stdlib_json_into_struct_baseline(benchmark: Any) -> None:
    body = JSON.encode(PAYLOAD)
    assert benchmark(lambda b: EmailPayload(**json.loads(b)), body) == PAYLOAD


def test_encode_struct_json(benchmark: Any) -> None:
    benchmark(JSON.encode, PAYLOAD)


def test_fire_an_event_no_hook_overrides(benchmark: Any) -> None:
    class OnlyErrors(Hooks):
        def on_error(self, message: Message | None, error: BaseException) -> None:
            pass

    hooks = HookSet([OnlyErrors()])
    message = Message(topic="t", body=b"")
    benchmark(hooks.fire, "on_dispatch", message)


def test_claim_a_batch_of_32_keys(benchmark: Any) -> None:
    store = MemoryStore()
    counter = iter(range(10**9))

    def claim() -> None:
        base = next(counter) * 32
        store.claim_many([f"k{base + i}" for i in range(32)], 60.0)

    benchmark(claim)


def test_schedule_and_fire_1000_timers(benchmark: Any) -> None:
    rng = random.Random(0)
    offsets = [rng.uniform(0.0, 30.0) for _ in range(1000)]

    def run() -> int:
        wheel: TimerWheel[int] = TimerWheel(lambda items: None)
        wheel.advance(0.0)
        for i, offset in enumerate(offsets):
            wheel.schedule(offset, i)
        fired = 0
        now = 0.0
        while fired < 1000:
            now += 0.05
            fired += len(wheel.advance(now))
        return fired

    assert benchmark(run) == 1000
