"""The tasks of a small shop, tested without a broker in test_tasks.py.

An order is confirmed (or dead-lettered when it has no total), which queues its
receipt for a minute later; the receipt goes out through a mail server that may be
down, and is then retried with the backoff (1 s, 2 s, 4 s) up to three times.
"""

from __future__ import annotations

import msgspec

import taskorbit as orbit

# In production the transport would be a URL ("redis://...") and the store a
# RedisStore; the tests run the same tasks without either.
app = orbit.Orbit(idempotency_store=orbit.MemoryStore())


class Order(msgspec.Struct):
    id: int
    email: str
    total_cents: int


class Receipt(msgspec.Struct):
    order_id: int
    email: str


class MailServerDown(ConnectionError):
    pass


class Mailer:
    """Stands in for an SMTP client: the next ``down_for`` sends fail."""

    def __init__(self, down_for: int = 0) -> None:
        self.down_for = down_for
        self.sent: list[tuple[str, str]] = []

    def send(self, to: str, subject: str) -> None:
        if self.down_for > 0:
            self.down_for -= 1
            raise MailServerDown("the mail server is down")
        self.sent.append((to, subject))


mailer = Mailer()


@app.task("orders.confirm", idempotency_key=lambda order: f"confirm-{order.id}")
def confirm(order: Order) -> orbit.Result | None:
    if order.total_cents <= 0:
        return orbit.dead_letter(f"order {order.id} has no total")
    send_receipt.delay(Receipt(order_id=order.id, email=order.email), countdown=60)
    return None


@app.task("orders.receipt", max_retries=3)
def send_receipt(receipt: Receipt) -> None:
    mailer.send(receipt.email, f"Your receipt for order {receipt.order_id}")
