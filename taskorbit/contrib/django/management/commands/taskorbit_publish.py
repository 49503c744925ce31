"""``python manage.py taskorbit_publish TOPIC JSON``: ``taskorbit publish`` for this
project's Orbit, with the same arguments and options (without ``MODULE:APP``)."""

from __future__ import annotations

import sys
from argparse import ArgumentParser, Namespace
from typing import Any

from django.core.management.base import BaseCommand

from taskorbit.cli.main import add_publish_arguments, reported, run_publish
from taskorbit.contrib.django import app

NAME = "this project's taskorbit app"


class Command(BaseCommand):  # type: ignore[misc]
    help = "Publish one message (see `taskorbit publish --help`)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_publish_arguments(parser, app=False)

    def handle(self, *args: Any, **options: Any) -> None:
        code = reported(lambda: run_publish(app, Namespace(**options), NAME))
        if code:
            sys.exit(code)
