"""A missing optional dependency reads the same everywhere: "<what> needs the <extra>
extra: pip install 'taskorbit[<extra>]'", and `taskorbit` turns it into exit status
3 when the app's import hits it. Each case runs in a subprocess whose imports of
the client library fail, as they would where the extra is not installed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taskorbit.extras import MissingExtraError, needs_extra

# Prepended to the subprocess's code: every import of a top-level package named in
# HIDDEN (comma-separated) fails as if it were not installed.
HIDE = textwrap.dedent(
    """
    import importlib.abc, os, sys
    HIDDEN = set(os.environ["HIDDEN"].split(","))

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.partition(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    """
)

CASES = [
    ("redis", "taskorbit.transports.redis", "the Redis transport", "redis"),
    ("redis", "taskorbit.transports.redis_streams", "the Redis transport", "redis"),
    ("redis", "taskorbit.idempotency.redis", "the Redis idempotency store", "redis"),
    ("boto3", "taskorbit.transports.sqs", "the SQS transport", "sqs"),
    ("botocore", "taskorbit.transports.sqs", "the SQS transport", "sqs"),
    ("google", "taskorbit.transports.pubsub", "the Pub/Sub transport", "pubsub"),
    ("flask", "taskorbit.contrib.flask", "the Flask extension (taskorbit.contrib.flask)", "flask"),
    (
        "django",
        "taskorbit.contrib.django",
        "the Django integration (taskorbit.contrib.django)",
        "django",
    ),
    ("django", "taskorbit.contrib.django.worker", "the Django integration", "django"),
    ("prometheus_client", "taskorbit.observability.prometheus", "PrometheusHooks", "prometheus"),
    ("opentelemetry", "taskorbit.observability.otel", "OpenTelemetryHooks", "otel"),
]


def run_hidden(hidden: str, code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", HIDE + textwrap.dedent(code), *args],
        cwd=cwd,
        env={**os.environ, "HIDDEN": hidden},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("hidden", "module", "what", "extra"), CASES)
def test_each_integration_names_its_extra_when_its_library_is_missing(
    tmp_path: Path, hidden: str, module: str, what: str, extra: str
) -> None:
    code = f"""
    try:
        import {module}
    except ModuleNotFoundError as e:
        print(type(e).__name__, e.name, sep="|")
        print(e)
    """
    run = run_hidden(hidden, code, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    kind, message = run.stdout.splitlines()
    assert kind == f"MissingExtraError|{hidden}"  # still a ModuleNotFoundError, name kept
    assert message.startswith(f"{what}")
    assert message.endswith(
        f" needs the {extra} extra: pip install 'taskorbit[{extra}]' (no module named {hidden!r})"
    )


CLI_CASES = [
    ("redis", "redis://localhost:6379/0", "the Redis transport", "redis"),
    ("boto3", "sqs://orders", "the SQS transport", "sqs"),
    ("google", "pubsub://projects/p/subscriptions/s?topic=t", "the Pub/Sub transport", "pubsub"),
]


@pytest.mark.parametrize(("hidden", "url", "what", "extra"), CLI_CASES)
@pytest.mark.parametrize("command", [["publish", "shop:app", "t", "{}"], ["worker", "shop:app"]])
def test_the_cli_reports_a_missing_extra_in_the_app_as_exit_3(
    tmp_path: Path, hidden: str, url: str, what: str, extra: str, command: list[str]
) -> None:
    (tmp_path / "shop.py").write_text(
        "import taskorbit as orbit\n"
        "from taskorbit.transports.url import transport_from_url\n"
        f"app = orbit.Orbit(transport_from_url({url!r}))\n"
    )
    code = "from taskorbit.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    run = run_hidden(hidden, code, *command, cwd=tmp_path)
    assert run.returncode == 3, run.stderr
    assert run.stderr == (
        f"taskorbit: cannot import 'shop': {what} needs the {extra} extra: "
        f"pip install 'taskorbit[{extra}]' (no module named {hidden!r})\n"
    )


def test_the_cli_reports_a_missing_framework_extra_as_exit_3(tmp_path: Path) -> None:
    (tmp_path / "web.py").write_text(
        "from taskorbit.contrib.flask import TaskOrbit\ntasks = TaskOrbit()\n"
    )
    code = "from taskorbit.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    run = run_hidden("flask", code, "worker", "web:tasks", cwd=tmp_path)
    assert run.returncode == 3, run.stderr
    assert run.stderr == (
        "taskorbit: cannot import 'web': the Flask extension (taskorbit.contrib.flask) needs "
        "the flask extra: pip install 'taskorbit[flask]' (no module named 'flask')\n"
    )


def test_a_missing_module_that_is_not_the_extras_is_raised_unchanged() -> None:
    with (
        pytest.raises(ModuleNotFoundError) as raised,
        needs_extra("the Redis transport", "redis", "redis"),
    ):
        import taskorbit_no_such_module  # type: ignore[import-not-found]  # noqa: F401
    assert not isinstance(raised.value, MissingExtraError)
    assert raised.value.name == "taskorbit_no_such_module"
