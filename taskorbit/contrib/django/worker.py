"""``taskorbit worker taskorbit.contrib.django.worker:app``: sets Django up first.

Needs DJANGO_SETTINGS_MODULE, as manage.py does. ``manage.py taskorbit_worker``
uses this module for its ``--processes`` children.

When Django cannot be set up, importing this module raises ImportError with one
sentence saying what to set (the CLI prints it and exits with status 3) instead of
Django's ImproperlyConfigured traceback.
"""

from __future__ import annotations

import os

import django
from django.core.exceptions import ImproperlyConfigured

SETTINGS_ENV = "DJANGO_SETTINGS_MODULE"
_MANAGE_PY = "or run python manage.py taskorbit_worker / taskorbit_dlq / taskorbit_publish"


def _setup() -> None:
    settings_module = os.environ.get(SETTINGS_ENV)
    if not settings_module:
        raise ImportError(
            f"{__name__} needs {SETTINGS_ENV} to name the project's settings "
            f"(e.g. {SETTINGS_ENV}=mysite.settings, as manage.py sets it), {_MANAGE_PY}"
        )
    try:
        django.setup()
    except ImproperlyConfigured as e:
        raise ImportError(
            f"Django could not be set up with {SETTINGS_ENV}={settings_module}: {e}"
        ) from e
    except ModuleNotFoundError as e:
        if e.name is None or not (settings_module + ".").startswith(e.name + "."):
            raise
        raise ImportError(
            f"{SETTINGS_ENV}={settings_module} cannot be imported ({e}); run this from the "
            f"project's directory (where manage.py is), {_MANAGE_PY}"
        ) from e


_setup()

from taskorbit.contrib.django import app  # noqa: E402

__all__ = ["app"]
