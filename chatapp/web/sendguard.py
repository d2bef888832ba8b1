"""Abandon writes to clients that stopped reading.

A client that keeps its connection open but never reads fills the kernel's socket
buffers, and then the server's write blocks for ever: the reader's greenlet (or thread)
and its stream slot stay taken. The WSGI server does the writing, so chatapp cannot
time the write itself; instead each stream reports when it hands a chunk to the server
and when the server comes back for the next one. One watcher per app looks at the
writes in flight and shuts down the socket of any that has lasted longer than
``CHATAPP_SEND_TIMEOUT_SECONDS``. The blocked write then fails with a broken pipe, which
gunicorn (gevent and gthread workers) and werkzeug treat as a client that left: they
close the response iterable, which releases the stream's slot.

The socket comes from the WSGI environ: ``gunicorn.socket`` under gunicorn,
``werkzeug.socket`` under ``flask run``. Under a server that exposes neither, writes are
not guarded. A socket timeout would also end the write, but gunicorn logs that as an
unexpected socket error with a traceback, for what is an ordinary slow client.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

from .._concurrency import spawn

__all__ = ["SendGuard", "client_socket"]

log = logging.getLogger("chatapp.sendguard")


def client_socket(environ: Mapping[str, Any]) -> socket.socket | None:
    """The client's socket from a WSGI environ, when the server exposes it."""
    # HTTP/2 multiplexes streams over one socket; shutting it down would end them all.
    if str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/2"):
        return None
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    return sock if hasattr(sock, "shutdown") else None


class SendGuard:
    """Shuts down the sockets of writes that take longer than ``timeout`` seconds."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        # How often the watcher looks: the abandon happens within timeout + interval.
        self.interval = min(1.0, timeout / 4)
        self._writes: dict[int, tuple[float, socket.socket]] = {}
        self._lock = threading.Lock()
        self._watching = False
        self.abandoned = 0

    def writing(self, key: int, sock: socket.socket) -> None:
        """A chunk was handed to the server for ``sock``."""
        with self._lock:
            self._writes[key] = (time.monotonic() + self.timeout, sock)
            start = not self._watching
            self._watching = True
        if start:
            # Started on first use, inside the worker process, so it is a greenlet under
            # gevent (the worker has patched threading) and a thread elsewhere.
            spawn(self._watch, name="chatapp-send-guard")

    def written(self, key: int) -> None:
        """The server came back for more: the previous write finished."""
        with self._lock:
            self._writes.pop(key, None)

    def _watch(self) -> None:
        while True:
            time.sleep(self.interval)
            now = time.monotonic()
            with self._lock:
                stalled = [(key, sock) for key, (deadline, sock) in self._writes.items() if deadline <= now]
                for key, _ in stalled:
                    del self._writes[key]
                # Nothing in flight: stop; the next write starts a new watcher.
                done = not self._writes
                if done:
                    self._watching = False
            for _, sock in stalled:
                self._abandon(sock)
            if done:
                return

    def _abandon(self, sock: socket.socket) -> None:
        self.abandoned += 1
        log.info("abandoned a write to a client that stopped reading for %.0f s", self.timeout)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            # Already closed by the client or the server: nothing left to free.
            pass
