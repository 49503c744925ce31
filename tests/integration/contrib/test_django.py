"""The Django example: a view publishes on commit; a worker thread (memory) or a
`manage.py taskorbit_worker` process (Redis) handles it and reads the committed row."""

from __future__ import annotations

import importlib
import json
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


# -- the command line, as a newcomer meets it -------------------------------------


def run(
    args: list[str], cwd: Path, env: dict[str, str], *, drop: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in {**os.environ, **env}.items() if k not in drop}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "command",
    [
        ["dlq", "list", "taskorbit.contrib.django.worker:app"],
        ["publish", "taskorbit.contrib.django.worker:app", "orders.receipt", '{"id": 1}'],
        ["worker", "taskorbit.contrib.django.worker:app"],
    ],
)
def test_the_django_app_without_django_settings_module_is_one_sentence_and_exit_3(
    django_project: Path, command: list[str]
) -> None:
    done = run(["-m", "taskorbit", *command], PROJECT, {}, drop=("DJANGO_SETTINGS_MODULE",))
    assert done.returncode == 3, done.stderr
    assert done.stderr == (
        "taskorbit: cannot import 'taskorbit.contrib.django.worker': "
        "taskorbit.contrib.django.worker needs DJANGO_SETTINGS_MODULE to name the project's "
        "settings (e.g. DJANGO_SETTINGS_MODULE=mysite.settings, as manage.py sets it), or run "
        "python manage.py taskorbit_worker / taskorbit_dlq / taskorbit_publish\n"
    )


def test_a_django_settings_module_that_cannot_be_imported_is_one_sentence_and_exit_3(
    django_project: Path, tmp_path: Path
) -> None:
    done = run(
        ["-m", "taskorbit", "dlq", "list", "taskorbit.contrib.django.worker:app"],
        tmp_path,
        {"DJANGO_SETTINGS_MODULE": "shop.settings"},
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith(
        "taskorbit: cannot import 'taskorbit.contrib.django.worker': "
        "DJANGO_SETTINGS_MODULE=shop.settings cannot be imported (No module named 'shop'); "
        "run this from the project's directory (where manage.py is)"
    )


WSGI = """
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
"""


def test_a_django_wsgi_application_leads_to_the_projects_orbit(
    django_project: Path, tmp_path: Path
) -> None:
    (tmp_path / "shop_wsgi.py").write_text(WSGI)
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskorbit", "worker", "shop_wsgi:application", "--status", "off"],
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")])
            ),
            "DJANGO_SETTINGS_MODULE": "shop.settings",
        },
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "worker started" in line:
                break
        assert "worker started: transport=memory topics=orders.receipt concurrency=4" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_django_application_without_the_taskorbit_app_says_what_to_add(
    django_project: Path, tmp_path: Path
) -> None:
    (tmp_path / "bare_settings.py").write_text("SECRET_KEY = 'x'\nINSTALLED_APPS = []\n")
    (tmp_path / "bare_wsgi.py").write_text(WSGI)
    done = run(
        ["-m", "taskorbit", "worker", "bare_wsgi:application"],
        tmp_path,
        {"DJANGO_SETTINGS_MODULE": "bare_settings"},
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr == (
        "taskorbit: `bare_wsgi:application` is a Django application without "
        '"taskorbit.contrib.django" in INSTALLED_APPS; add "taskorbit.contrib.django" to '
        "INSTALLED_APPS, then pass taskorbit.contrib.django.worker:app or run python "
        "manage.py taskorbit_worker\n"
    )


def test_manage_py_taskorbit_publish_and_taskorbit_dlq_take_the_cli_arguments(
    django_project: Path, redis_url: str
) -> None:
    env = {"TASKORBIT_TRANSPORT": redis_url, "SHOP_DB": str(django_project)}
    published = run(
        ["manage.py", "taskorbit_publish", "orders.receipt", '{"id": 1}', "--attribute", "k=v"],
        PROJECT,
        env,
    )
    assert published.returncode == 0, published.stderr
    message_id = published.stdout.strip()
    assert published.stderr == ""

    misspelt = run(["manage.py", "taskorbit_publish", "orders.reciept", "{}"], PROJECT, env)
    assert misspelt.returncode == 0, misspelt.stderr
    assert misspelt.stderr == (
        "taskorbit: topic 'orders.reciept' has no handler in this project's taskorbit app; "
        "did you mean 'orders.receipt'? Publishing it anyway, in case another service "
        "handles it.\n"
    )

    from taskorbit.transports.redis.streams import RedisStreamsTransport

    transport = RedisStreamsTransport(redis_url)
    try:
        received = {m.id: m for m in transport.receive(10, 2.0)}
        assert received[message_id].attributes == {"k": "v"}
        transport.dead_letter(received[message_id], "no such order")
    finally:
        transport.close()

    listed = run(["manage.py", "taskorbit_dlq", "list", "--json"], PROJECT, env)
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["id"], row["reason"]) == (message_id, "no such order")

    unknown = run(["manage.py", "taskorbit_dlq", "purge", "0-1"], PROJECT, env)
    assert unknown.returncode == 1
    assert unknown.stderr.splitlines()[-1] == "taskorbit: no dead letter with id '0-1'"

    redriven = run(["manage.py", "taskorbit_dlq", "redrive", message_id], PROJECT, env)
    assert redriven.returncode == 0, redriven.stderr
    assert redriven.stdout.startswith(f"{message_id} → ")
    assert redriven.stderr == "1 dead letter redriven\n"


def test_manage_py_taskorbit_worker_reports_a_bad_option_as_one_sentence(
    django_project: Path,
) -> None:
    done = run(["manage.py", "taskorbit_worker", "--concurrency", "0"], PROJECT, {})
    assert done.returncode == 2
    assert done.stderr == "taskorbit: --concurrency 0 is invalid: must be greater than 0\n"
