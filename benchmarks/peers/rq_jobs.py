"""The job function RQ workers import by its dotted path."""

from __future__ import annotations

from benchmarks.peers._common import handle


def record(run_key: str, target: int, sleep_ms: int) -> None:
    handle(run_key, target, sleep_ms)
