"""The Django AppConfig: configure the app from settings, discover tasks.py."""

from __future__ import annotations

from django.apps import AppConfig, apps
from django.conf import settings
from django.utils.module_loading import module_has_submodule

from taskorbit.contrib import configure
from taskorbit.contrib.django import app
from taskorbit.contrib.django.hooks import DjangoDatabaseHooks


class TaskorbitConfig(AppConfig):  # type: ignore[misc]
    name = "taskorbit.contrib.django"
    label = "taskorbit"
    verbose_name = "taskorbit"

    def ready(self) -> None:
        options = dict(getattr(settings, "TASKORBIT", {}) or {})
        if not app.running:
            configure(app, options)
            app.hooks.add(DjangoDatabaseHooks())
        if options.get("AUTODISCOVER", True):
            autodiscover(options.get("TASKS_MODULE", "tasks"))


def autodiscover(module_name: str = "tasks") -> list[str]:
    """Import ``<app>.tasks`` for every installed app that has one."""
    from importlib import import_module

    found = []
    for config in apps.get_app_configs():
        if module_has_submodule(config.module, module_name):
            import_module(f"{config.name}.{module_name}")
            found.append(f"{config.name}.{module_name}")
    return found
