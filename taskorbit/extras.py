"""One sentence for a missing optional dependency, wherever it is imported.

Each broker, store, framework and metrics integration needs a client library that
``pip install taskorbit`` does not bring. Without this, a user sees a bare
``No module named 'google'`` from deep inside an import chain and has to guess
which extra brings it. Every integration imports its library inside
:func:`needs_extra`, so every such failure reads the same::

    the Pub/Sub transport needs the pubsub extra: pip install 'taskorbit[pubsub]'
    (no module named 'google')

The error stays a :class:`ModuleNotFoundError` (``name`` is the missing module),
so code that catches that still works; the CLI reports it as an app that could
not be loaded (exit status 3).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class MissingExtraError(ModuleNotFoundError):
    """A client library of an optional extra is not installed; the message says
    which extra brings it."""

    def __init__(self, what: str, extra: str, missing: str) -> None:
        super().__init__(
            f"{what} needs the {extra} extra: pip install 'taskorbit[{extra}]' "
            f"(no module named {missing!r})",
            name=missing,
        )
        self.what = what
        self.extra = extra


@contextmanager
def needs_extra(what: str, extra: str, *modules: str) -> Iterator[None]:
    """Turn a ModuleNotFoundError for one of ``modules`` (top-level names) raised
    inside the block into a :class:`MissingExtraError` naming ``extra``.

    Any other missing module is a different fault and is raised unchanged. An
    error already naming an extra is re-worded for ``what`` (the Redis
    idempotency store imports the Redis transport's client module)::

        with needs_extra("the Flask extension", "flask", "flask"):
            from flask import Flask
    """
    try:
        yield
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing.partition(".")[0] not in modules:
            raise
        raise MissingExtraError(what, extra, missing) from e


__all__ = ["MissingExtraError", "needs_extra"]
