"""A TCP proxy in front of a test server, to take the broker away mid-run.

Restarting redis-server or moto_server would lose their state (the tests run them
without persistence); a proxy that drops every connection and refuses new ones
looks to the worker exactly like a broker outage, and ``restore`` brings the same
server back with everything it held::

    with OutageProxy("127.0.0.1", port) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        ...
        proxy.cut()      # every connection reset, new ones refused
        proxy.restore()  # connections accepted again
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading

from tests.servers import free_port


class OutageProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []  # guarded by _lock
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self.cuts = 0

    def __enter__(self) -> OutageProxy:
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self.cut()

    def restore(self) -> None:
        """Accept connections again (on the same port)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Reset every open connection and stop listening: the broker is gone."""
        with self._lock:
            listener, self._listener = self._listener, None
            pairs, self._pairs = self._pairs, []
        if listener is not None:
            listener.close()
            self.cuts += 1
        for a, b in pairs:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    # RST, not FIN: the client sees a reset connection, as on a crash.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by cut()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        try:
            while not self._stopped.is_set():
                for key, _ in selector.select(timeout=0.5):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            selector.close()
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()
