"""The Huey instance the consumer imports
(``huey_consumer benchmarks.peers.huey_app.huey``): RedisHuey with its defaults
(blocking BRPOP reads, results stored only when not None)."""

from __future__ import annotations

import os

from huey import RedisHuey  # type: ignore[import-untyped]

from benchmarks.peers._common import URL_ENV, handle

huey = RedisHuey("bench-huey", url=os.environ[URL_ENV])


@huey.task(name="bench_record")  # type: ignore[untyped-decorator]
def record(run_key: str, target: int, sleep_ms: int) -> None:
    handle(run_key, target, sleep_ms)
