"""Database connection hygiene for handlers, as Django's request cycle does it."""

from __future__ import annotations

from django.db import close_old_connections

from taskorbit.hooks import Hooks
from taskorbit.message import Message, Result


class DjangoDatabaseHooks(Hooks):
    """``close_old_connections()`` before and after every handler run.

    Worker threads live for hours; without this a thread would keep using a
    connection past CONN_MAX_AGE, or one a failed handler left in a broken state.
    """

    def on_dispatch(self, message: Message) -> None:
        close_old_connections()

    def on_complete(self, message: Message, result: Result, duration_s: float) -> None:
        close_old_connections()

    def on_retry(self, message: Message, delay_s: float, reason: str) -> None:
        close_old_connections()

    def on_dead_letter(self, message: Message, reason: str) -> None:
        close_old_connections()
