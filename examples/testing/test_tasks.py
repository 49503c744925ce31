"""Testing the shop's tasks without a broker and without waiting (docs/testing.md).

pytest examples/testing
"""

from __future__ import annotations

import pytest
from tasks import Mailer, MailServerDown, Order, Receipt, app, confirm, send_receipt

from taskorbit.testing import TestRun

ADA = Order(id=42, email="ada@example.com", total_cents=990)
RECEIPT = ("ada@example.com", "Your receipt for order 42")

# -- a handler is a function: call it ---------------------------------------------------


def test_a_receipt_is_mailed(mailer: Mailer) -> None:
    send_receipt(Receipt(order_id=42, email="ada@example.com"))
    assert mailer.sent == [RECEIPT]


# -- publish, then drain: the worker's pipeline, with the delays skipped -------------------


def test_the_receipt_goes_out_a_minute_after_the_confirmation(
    taskorbit_run: TestRun, mailer: Mailer
) -> None:
    confirm.delay(ADA)
    taskorbit_run.advance(59)  # confirm runs at once; the receipt waits
    [receipt] = taskorbit_run.queued
    assert receipt.payload == Receipt(order_id=42, email="ada@example.com")
    assert receipt.due_in == 1.0
    assert mailer.sent == []
    taskorbit_run.advance(1)
    assert mailer.sent == [RECEIPT]


def test_a_mail_server_outage_is_retried_with_backoff(
    taskorbit_run: TestRun, mailer: Mailer
) -> None:
    mailer.down_for = 2
    confirm.delay(ADA)
    report = taskorbit_run.drain()  # 63 s of countdown and backoff, skipped
    assert report.for_topic("orders.receipt").fates == ["retried", "retried", "acked"]
    assert [d.delay for d in report.retried] == [1.0, 2.0]
    assert mailer.sent == [RECEIPT]


def test_a_long_outage_ends_in_the_dead_letter_queue(
    taskorbit_run: TestRun, mailer: Mailer
) -> None:
    mailer.down_for = 100
    confirm.delay(ADA)
    taskorbit_run.drain()
    [letter] = taskorbit_run.dead_letters
    assert letter.topic == "orders.receipt"
    assert letter.attempts == 4  # max_retries=3: four runs, no more
    assert letter.reason.endswith("MailServerDown: the mail server is down")


def test_an_order_without_a_total_is_dead_lettered(taskorbit_run: TestRun) -> None:
    confirm.delay(Order(id=7, email="bob@example.com", total_cents=0))
    taskorbit_run.drain()
    assert [(dl.topic, dl.reason) for dl in taskorbit_run.dead_letters] == [
        ("orders.confirm", "order 7 has no total")
    ]


def test_an_order_confirmed_twice_mails_one_receipt(taskorbit_run: TestRun, mailer: Mailer) -> None:
    confirm.delay(ADA)
    confirm.delay(ADA)  # same idempotency key: confirm-42
    report = taskorbit_run.drain()
    assert report.for_topic("orders.confirm").fates == ["acked", "duplicate"]
    assert mailer.sent == [RECEIPT]


# -- eager: .delay() returns once everything it caused has run --------------------------


@pytest.mark.taskorbit(eager=True)
def test_eagerly_delay_returns_after_the_receipt_went_out(
    taskorbit_run: TestRun, mailer: Mailer
) -> None:
    confirm.delay(ADA)
    assert mailer.sent == [RECEIPT]


@pytest.mark.taskorbit(eager=True, raise_errors=True)
def test_eagerly_a_failure_reaches_the_test(taskorbit_run: TestRun, mailer: Mailer) -> None:
    mailer.down_for = 1
    with pytest.raises(MailServerDown):
        confirm.delay(ADA)  # confirm runs, then its receipt, which raises
    assert mailer.sent == []


# -- without the fixture: the context manager itself --------------------------------------


def test_without_the_fixture(mailer: Mailer) -> None:
    with TestRun(app) as run:
        confirm.delay(ADA)
        run.drain()
    assert mailer.sent == [RECEIPT]
