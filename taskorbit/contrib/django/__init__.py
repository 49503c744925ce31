"""Django integration: ``INSTALLED_APPS += ["taskorbit.contrib.django"]``.

- ``app`` below is the project's :class:`taskorbit.Orbit`. Each installed app's
  ``tasks.py`` registers handlers on it (``from taskorbit.contrib.django import app``)
  and is imported automatically when Django starts.
- ``settings.TASKORBIT`` configures it (keys in :mod:`taskorbit.contrib`), e.g.
  ``TASKORBIT = {"TRANSPORT": "redis://localhost:6379/0", "CONCURRENCY": 16}``.
- ``python manage.py taskorbit_worker`` runs the worker with the CLI's options.
- Each handler runs between two ``django.db.close_old_connections()`` calls, as
  Django's request cycle does, so long-lived worker threads never use a
  connection past ``CONN_MAX_AGE`` or one left broken by an earlier handler.
- Views publish with ``task.delay(...)``; :func:`delay_on_commit` publishes only
  once the surrounding transaction commits (nothing is sent if it rolls back).
"""

from __future__ import annotations

from typing import Any

from taskorbit.app import Orbit
from taskorbit.extras import needs_extra
from taskorbit.task import Task

with needs_extra("the Django integration (taskorbit.contrib.django)", "django", "django"):
    import django  # noqa: F401 - checked here, used by every module of this package

# Configured from settings.TASKORBIT in TaskorbitConfig.ready(); the in-memory
# transport stands in until then.
app = Orbit()


def installed_app() -> Orbit | None:
    """``app`` once Django is set up with this integration in INSTALLED_APPS (its
    settings applied, tasks.py modules imported), else None. How ``taskorbit worker
    mysite.wsgi:application`` finds the project's Orbit."""
    from django.apps import apps

    return app if apps.ready and apps.is_installed(__name__) else None


def delay_on_commit(
    task: Task[Any], payload: Any, *, using: str | None = None, **options: Any
) -> None:
    """Publish ``payload`` for ``task`` when the current transaction commits."""
    from django.db import transaction

    transaction.on_commit(lambda: task.delay(payload, **options), using=using)


def publish_on_commit(
    topic: str, payload: Any, *, using: str | None = None, **options: Any
) -> None:
    """Like :func:`delay_on_commit`, by topic name."""
    from django.db import transaction

    transaction.on_commit(lambda: app.publish(topic, payload, **options), using=using)


__all__ = ["app", "delay_on_commit", "installed_app", "publish_on_commit"]
