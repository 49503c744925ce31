"""Run the example end to end in one process: a request, then the worker.

Run it with ``python examples/django/demo.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
os.environ.setdefault("SHOP_DB", os.path.join(tempfile.mkdtemp(), "shop.sqlite3"))

import django

django.setup()

from django.test import Client  # noqa: E402
from orders.tasks import receipts  # noqa: E402

from taskorbit.contrib.django import app  # noqa: E402

app.start()  # a worker in this process; `python manage.py taskorbit_worker` elsewhere
try:
    response = Client().post("/orders/", data='{"total": "9.99"}', content_type="application/json")
    print("POST /orders/ ->", response.status_code, response.json())
    deadline = time.monotonic() + 10
    while not receipts and time.monotonic() < deadline:
        time.sleep(0.01)
    print("worker:", receipts[0] if receipts else "nothing handled")
finally:
    app.stop()
