"""How `taskorbit` finds the Orbit behind MODULE:APP, run as real subprocesses: a
Flask application leads to its extension's Orbit, only a plain function of no
arguments is called as a factory, and everything else is one sentence saying what
it is and what to pass (exit status 3), never a traceback."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import pytest

from tests.unit.cli.test_cli import Proc

WEB = textwrap.dedent(
    """
    from flask import Flask
    import taskorbit as orbit
    from taskorbit.contrib.flask import TaskOrbit

    tasks = TaskOrbit()

    @tasks.task("welcome.send")
    def send_welcome(email: str) -> None: ...

    def create_app():
        app = Flask(__name__)
        tasks.init_app(app)
        return app

    app = create_app()
    bare = Flask("bare")

    def reset_database(confirm):
        open("called", "w").close()

    class Cache:
        def __call__(self):
            open("called", "w").close()

    cache = Cache()
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "web.py").write_text(WEB)
    return tmp_path


def taskorbit(project: Path, *args: str, **env: str) -> Proc:
    return Proc(list(args), project, env)


@pytest.mark.parametrize("spec", ["web:app", "web:create_app", "web:tasks"])
def test_a_flask_app_its_factory_and_its_extension_all_lead_to_the_orbit(
    project: Path, spec: str
) -> None:
    worker = taskorbit(project, "worker", spec, "--status", "off")
    try:
        worker.wait_for("worker started: transport=memory topics=welcome.send ")
        worker.signal(signal.SIGTERM)
        assert worker.finish() == 0, worker.output
    finally:
        worker.kill()
    assert "Traceback" not in worker.output


@pytest.mark.parametrize(
    ("spec", "sentence"),
    [
        ("web:bare", "`web:bare` is a Flask application; pass the Orbit, e.g. `web:tasks`"),
        (
            "web:reset_database",
            "`web:reset_database` is the function reset_database(confirm), which takes "
            "arguments; pass the Orbit, e.g. `web:tasks`",
        ),
        (
            "web:cache",
            "`web:cache` is a web.Cache, not a taskorbit.Orbit; pass the Orbit, e.g. `web:tasks`",
        ),
        (
            "web:send_welcome",
            "`web:send_welcome` is the handler of topic 'welcome.send', not the Orbit it is "
            "registered on; pass the Orbit, e.g. `web:tasks`",
        ),
        ("web:Cache", "`web:Cache` is the class Cache, not an Orbit; pass the Orbit"),
        ("web:nope", "'web' has no attribute 'nope'; it defines `web:tasks`"),
    ],
)
def test_what_is_not_an_orbit_is_named_with_what_to_pass_and_never_called(
    project: Path, spec: str, sentence: str
) -> None:
    for command in (["worker", spec], ["publish", spec, "t", "{}"], ["dlq", "list", spec]):
        cli = taskorbit(project, *command)
        assert cli.finish() == 3, cli.output
        [line] = cli.lines
        assert line.startswith(f"taskorbit: {sentence}"), line
    assert not (project / "called").exists()


def test_an_error_while_importing_the_app_is_one_line_naming_where(project: Path) -> None:
    (project / "broken.py").write_text("import taskorbit\nrate = 1 / 0\n")
    cli = taskorbit(project, "worker", "broken:app")
    assert cli.finish() == 3
    assert cli.lines == [
        "taskorbit: cannot import 'broken': ZeroDivisionError: division by zero (broken.py, line 2)"
    ]


def test_a_factory_that_fails_is_one_line_naming_where(project: Path) -> None:
    (project / "factory.py").write_text("def make():\n    return {}['transport']\n")
    cli = taskorbit(project, "publish", "factory:make", "t", "{}")
    assert cli.finish() == 3
    assert cli.lines == [
        "taskorbit: the app factory `factory:make` failed: KeyError: 'transport' "
        "(factory.py, line 2)"
    ]


def test_a_factory_returning_something_else_says_what_it_returned(project: Path) -> None:
    (project / "factory.py").write_text("def make():\n    return 42\n")
    cli = taskorbit(project, "worker", "factory:make")
    assert cli.finish() == 3
    assert cli.lines == [
        "taskorbit: `factory:make` is an app factory that returned an int, not a "
        "taskorbit.Orbit; pass the taskorbit.Orbit (or TaskOrbit extension) as "
        "module:attribute"
    ]


@pytest.mark.parametrize("command", [["worker"], ["dlq", "list"], ["publish"]])
def test_a_bad_transport_url_in_the_app_is_a_configuration_error_exit_2(
    project: Path, command: list[str]
) -> None:
    (project / "shop.py").write_text(
        "import taskorbit as orbit\n"
        "from taskorbit.transports.url import transport_from_url\n"
        "app = orbit.Orbit(transport_from_url('redis://:hunter2@localhost:1/0?strem=jobs'))\n"
    )
    extra = ["t", "{}"] if command == ["publish"] else []
    cli = taskorbit(project, *command, "shop:app", *extra)
    assert cli.finish() == 2
    [line] = cli.lines
    assert line.startswith(
        "taskorbit: unknown option 'strem' in transport URL redis://:***@localhost:1/0?strem=jobs"
    ), line
    assert "hunter2" not in line
