"""The ``taskorbit`` command line: ``worker``, ``dlq``, ``publish``.

``main`` parses, dispatches and turns every error a user can cause into one line
and an exit status; ``worker`` runs one worker process or supervises several
(``supervisor``), with a live ``status`` line and a liveness file (``health``);
``dlq`` prints dead letters; ``config`` loads ``module:app`` and layers flags over
``TASKORBIT_*`` variables over the app. Nothing in the library imports this
package; the Django management commands (worker, dlq, publish) reuse its pieces.
``python -m taskorbit`` and ``python -m taskorbit.cli`` run ``main``.
"""

from taskorbit.cli.main import main

__all__ = ["main"]
