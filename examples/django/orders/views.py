from __future__ import annotations

import json

from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from orders.tasks import send_receipt
from taskorbit.contrib.django import delay_on_commit


@csrf_exempt  # type: ignore[untyped-decorator]
def place_order(request: HttpRequest) -> JsonResponse:
    total = json.loads(request.body)["total"]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS orders "
                "(id INTEGER PRIMARY KEY, total TEXT, receipt_sent INTEGER DEFAULT 0)"
            )
            cursor.execute("INSERT INTO orders (total) VALUES (%s)", [total])
            order_id = cursor.lastrowid
        # Published only once the order row is committed: the worker can read it.
        delay_on_commit(send_receipt, {"id": order_id})
    return JsonResponse({"order": order_id}, status=201)
