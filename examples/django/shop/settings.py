"""Settings of the example project: the taskorbit app and one app with tasks."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only"
DEBUG = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "shop.urls"
USE_TZ = True
INSTALLED_APPS = ["taskorbit.contrib.django", "orders"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DB", str(BASE_DIR / "shop.sqlite3")),
    }
}
TASKORBIT = {
    # memory:// keeps the demo self-contained; use redis://, sqs://NAME or
    # pubsub://projects/P/subscriptions/S?topic=T between web and worker processes.
    "TRANSPORT": os.environ.get("TASKORBIT_TRANSPORT", "memory://"),
    "CONCURRENCY": 4,
    "SHUTDOWN_TIMEOUT": 10,
}
