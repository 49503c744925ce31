"""``taskorbit worker taskorbit.contrib.django.worker:app``: sets Django up first.

Needs DJANGO_SETTINGS_MODULE, as manage.py does. ``manage.py taskorbit_worker``
uses this module for its ``--processes`` children.
"""

from __future__ import annotations

import django

django.setup()

from taskorbit.contrib.django import app  # noqa: E402

__all__ = ["app"]
