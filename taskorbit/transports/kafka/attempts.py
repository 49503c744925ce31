"""Attempts across crashes: a small local store of what each partition owner handed out.

Kafka keeps no delivery count. A message that kills the worker is read again from
the last commit by the next owner of its partition, and without a count it would
crash the worker forever. So every owner writes down, before it hands messages to
the worker, how far it has handed them out ("delivered through offset h"), in a
small file per (group, topic, partition). An owner that ends cleanly (every message
it handed out settled, or handed back unrun at shutdown or revoke) erases its
entry; one that crashes leaves it. The next owner reads the entries left behind and
counts, for each offset it receives, how many earlier owners handed it out and
died::

    entries left by crashed owners: h = 120, 118     (two crashes)
    offset 110 -> 2 earlier deliveries -> attempt 3
    offset 119 -> 1 (only h=120 > 119)  -> attempt 2
    offset 125 -> 0                     -> attempt 1

That is the same count SQS and Redis Streams keep: every delivery to a worker that
crashed counts as an attempt of what it held, run or not. A record copied to a
retry topic carries its attempt in a header, and crash counts add to it there too.

The file lives on the worker's host (``attempts_dir``, by default under
``$XDG_STATE_HOME/taskorbit/kafka``): worker processes on one host share it, and a
supervisor restarting a crashed worker on the same host counts on. A partition
that moves to another host after a crash starts counting from the carried attempt
again (documented in docs/transports/kafka.md). Writes are one ``pwrite`` of a
fixed-size record per partition per receive: they survive a killed process (the
page cache outlives it), not a power loss.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from pathlib import Path

#: Entries kept per partition (the oldest go first: they matter least).
MAX_ENTRIES = 32
_RECORD_BYTES = 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def default_directory(bootstrap_servers: str, group: str) -> Path:
    """``$XDG_STATE_HOME/taskorbit/kafka/<cluster hash>-<group>``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    cluster = hashlib.sha1(bootstrap_servers.encode()).hexdigest()[:10]
    return Path(base) / "taskorbit" / "kafka" / f"{cluster}-{_UNSAFE.sub('_', group)}"


class AttemptStore:
    """Opens the per-partition records under one directory (None: counting off)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def open(self, topic: str, partition: int) -> PartitionAttempts:
        if self.directory is None:
            return PartitionAttempts(None)
        path = self.directory / f"{_UNSAFE.sub('_', topic)}.{partition}"
        return PartitionAttempts(path)


class PartitionAttempts:
    """One partition's record while this worker owns it."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        #: delivered-through offsets of earlier owners that did not end cleanly
        self.earlier: tuple[int, ...] = ()
        self.mine: int | None = None
        if path is not None:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            self.earlier = _parse(os.pread(self._fd, _RECORD_BYTES, 0))

    def crashes_before(self, offset: int) -> int:
        """How many earlier owners handed ``offset`` out and did not end cleanly."""
        earlier = self.earlier
        return sum(1 for h in earlier if h > offset) if earlier else 0

    def delivered_through(self, end: int) -> None:
        """Offsets below ``end`` are about to be handed out: write it down first."""
        if self._fd is None or (self.mine is not None and end <= self.mine):
            return
        with self._lock:
            self.mine = end
            self._write()

    def finish(self, *, clean: bool, position: int | None, still_out: int | None) -> None:
        """This owner lets the partition go. Clean: nothing it handed out is still
        running, so its entry goes. Otherwise the entry stays, narrowed to the
        messages still out. Entries at or below the committed ``position`` can no
        longer matter and are dropped."""
        if self._fd is None:
            return
        with self._lock:
            self.mine = None if clean or still_out is None else still_out + 1
            if position is not None:
                self.earlier = tuple(h for h in self.earlier if h > position)
                if self.mine is not None and self.mine <= position:
                    self.mine = None
            self._write()
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _write(self) -> None:
        assert self._fd is not None
        entries = [*self.earlier, *([self.mine] if self.mine is not None else [])]
        text = " ".join(str(h) for h in entries[-MAX_ENTRIES:])
        os.pwrite(self._fd, text.encode().ljust(_RECORD_BYTES), 0)


def _parse(raw: bytes) -> tuple[int, ...]:
    """Every entry in the record (a crashed owner's own entry is now an earlier one);
    anything unreadable counts as no entry."""
    found = []
    for word in raw.split():
        with contextlib.suppress(ValueError):
            found.append(int(word))
    return tuple(found[-MAX_ENTRIES:])
