"""The Django example: a view publishes on commit; a worker thread (memory) or a
`manage.py taskorbit_worker` process (Redis) handles it and reads the committed row."""

from __future__ import annotations

import importlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.waiting import wait_for

PROJECT = Path(__file__).parents[3] / "examples" / "django"


@pytest.fixture(scope="module")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    database = tmp_path_factory.mktemp("django") / "shop.sqlite3"
    os.environ["DJANGO_SETTINGS_MODULE"] = "shop.settings"
    os.environ["SHOP_DB"] = str(database)
    sys.path.insert(0, str(PROJECT))
    import django

    django.setup()
    yield database
    sys.path.remove(str(PROJECT))


def test_tasks_modules_are_discovered_and_settings_applied(django_project: Path) -> None:
    from taskorbit.contrib.django import app

    assert "orders.receipt" in app.tasks
    assert app.concurrency == 4 and app.shutdown_timeout == 10


def test_a_view_publishes_on_commit_and_a_worker_thread_reads_the_row(django_project: Path) -> None:
    from django.test import Client

    receipts = importlib.import_module("orders.tasks").receipts

    from taskorbit.contrib.django import app

    app.start()
    try:
        response = Client().post(
            "/orders/", data='{"total": "9.99"}', content_type="application/json"
        )
        assert response.status_code == 201
        order = response.json()["order"]
        wait_for(lambda: receipts, 15.0, "the worker thread to send the receipt")
    finally:
        app.stop(5)
    assert receipts == [f"receipt for order {order}: 9.99"]


def test_nothing_is_published_when_the_transaction_rolls_back(django_project: Path) -> None:
    from django.db import transaction

    send_receipt = importlib.import_module("orders.tasks").send_receipt

    from taskorbit.contrib.django import app, delay_on_commit

    before = app.transport.published  # type: ignore[attr-defined]
    with transaction.atomic():
        delay_on_commit(send_receipt, {"id": 1})
        transaction.set_rollback(True)
    assert app.transport.published == before  # type: ignore[attr-defined]


def test_manage_py_taskorbit_worker_handles_what_a_view_published_over_redis(
    django_project: Path, redis_url: str
) -> None:
    from django.test import Client

    from taskorbit.contrib.django import app
    from taskorbit.transports.redis.streams import RedisStreamsTransport

    proc = subprocess.Popen(
        [sys.executable, "manage.py", "taskorbit_worker", "--status", "off", "--concurrency", "2"],
        cwd=PROJECT,
        env={**os.environ, "TASKORBIT_TRANSPORT": redis_url, "SHOP_DB": str(django_project)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    memory = app.transport
    app.transport = RedisStreamsTransport(redis_url)  # the web process publishes to Redis
    try:
        response = Client().post(
            "/orders/", data='{"total": "5.00"}', content_type="application/json"
        )
        assert response.status_code == 201
        order = response.json()["order"]

        def receipted() -> bool:
            with sqlite3.connect(django_project) as db:
                row = db.execute(
                    "SELECT receipt_sent FROM orders WHERE id = ?", (order,)
                ).fetchone()
            return bool(row and row[0])

        wait_for(receipted, 15.0, "the worker process to mark the order receipted")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        assert (
            "worker started: transport=redis-streams topics=orders.receipt concurrency=2" in stderr
        )
    finally:
        app.transport.close()
        app.transport = memory
        if proc.poll() is None:
            proc.kill()
            proc.wait()
