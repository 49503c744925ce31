"""Discovered automatically: every installed app's tasks.py is imported at startup."""

from __future__ import annotations

from django.db import connection

from taskorbit.contrib.django import app

receipts: list[str] = []  # what the handler did, for the demo and the test


@app.task("orders.receipt")
def send_receipt(order: dict[str, int]) -> None:
    # The ORM is safe here: connections are closed/recycled around each handler.
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, total FROM orders WHERE id = %s", [order["id"]])
        order_id, total = cursor.fetchone()
        cursor.execute("UPDATE orders SET receipt_sent = 1 WHERE id = %s", [order_id])
    receipts.append(f"receipt for order {order_id}: {total}")
