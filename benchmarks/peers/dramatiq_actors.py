"""The Dramatiq broker and actor the Dramatiq worker imports
(``dramatiq benchmarks.peers.dramatiq_actors``). Dramatiq's defaults throughout:
RedisBroker with its default middleware, acks after the actor ran."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks.peers._common import URL_ENV, handle

broker = RedisBroker(url=os.environ[URL_ENV])  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_record", queue_name="bench-dramatiq")
def record(run_key: str, target: int, sleep_ms: int) -> None:
    handle(run_key, target, sleep_ms)
