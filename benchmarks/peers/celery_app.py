"""The Celery app the Celery worker imports (``celery -A benchmarks.peers.celery_app``).

Settings are Celery's defaults except: acks_late (a task is acked after it ran, the
at-least-once setting comparable to the other systems), results ignored (nobody
reads them), and the queue name.
"""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-untyped]

from benchmarks.peers._common import URL_ENV, handle

app = Celery("bench", broker=os.environ.get(URL_ENV))
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    task_default_queue="bench-celery",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.record")  # type: ignore[untyped-decorator]
def record(run_key: str, target: int, sleep_ms: int) -> None:
    handle(run_key, target, sleep_ms)
