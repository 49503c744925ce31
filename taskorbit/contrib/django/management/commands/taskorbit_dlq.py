"""``python manage.py taskorbit_dlq list|show|redrive|purge``: ``taskorbit dlq`` for
this project's Orbit, with the same actions and options (without ``MODULE:APP``)."""

from __future__ import annotations

import sys
from argparse import ArgumentParser, Namespace
from typing import Any

from django.core.management.base import BaseCommand

from taskorbit.cli.dlq import add_dlq_arguments, run_dlq
from taskorbit.cli.main import reported
from taskorbit.contrib.django import app

NAME = "this project's taskorbit app"


class Command(BaseCommand):  # type: ignore[misc]
    help = "Inspect and redrive the dead-letter queue (see `taskorbit dlq --help`)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_dlq_arguments(parser, app=False)

    def handle(self, *args: Any, **options: Any) -> None:
        code = reported(lambda: run_dlq(app, Namespace(**options), NAME))
        if code:
            sys.exit(code)
