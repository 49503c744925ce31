"""The guide's test (docs/guide.md, section 7): the retries of a failing handler, without
a broker and without waiting for the backoff. Run: cd examples/flask && pytest test_app.py"""

from __future__ import annotations

from app import Welcome, create_app, send_welcome, tasks

from taskorbit.testing import TestRun


def test_a_welcome_is_retried_then_dead_lettered_while_the_mail_server_is_down() -> None:
    web = create_app()
    web.config["MAIL_DOWN"] = True
    with TestRun(tasks) as run:
        send_welcome.delay(Welcome(email="ada@example.com"))
        report = run.drain()  # no waiting: the clock jumps over the backoff
    assert report.for_topic("welcome.send").fates == ["retried"] * 3 + ["dead_lettered"]
    assert "MailServerDown" in run.dead_letters[0].reason
