"""The ``taskorbit`` command line: ``worker``, ``dlq``, ``publish``.

``main`` parses and dispatches; ``worker`` runs one worker process or supervises
several (``supervisor``), with a live ``status`` line and a liveness file
(``health``); ``dlq`` prints dead letters; ``config`` loads ``module:app`` and
layers flags over ``TASKORBIT_*`` variables over the app. Nothing in the library
imports this package; the Django management command does.
"""

from taskorbit.cli.main import main

__all__ = ["main"]
