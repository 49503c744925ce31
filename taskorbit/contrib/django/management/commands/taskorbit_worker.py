"""``python manage.py taskorbit_worker``: the ``taskorbit worker`` command for Django."""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from taskorbit.cli.main import add_worker_options, reported, worker_settings
from taskorbit.cli.worker import configure_logging, run_worker
from taskorbit.contrib.django import app

APP_SPEC = "taskorbit.contrib.django.worker:app"


class Command(BaseCommand):  # type: ignore[misc]
    help = "Run the taskorbit worker for this project's tasks (see `taskorbit worker --help`)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_worker_options(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        def run() -> int:
            settings = worker_settings(options, configure_logging)
            return run_worker(APP_SPEC, app, settings)

        code = reported(run)
        if code:
            sys.exit(code)
