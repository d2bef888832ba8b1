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

Every response is guarded, not only streams: :class:`GuardedBody` hands a plain
response (history, the page, static files) to the server in parts of at most
:data:`PART_BYTES`, each under the same timeout, so a client that asks for a large answer
and never reads pins one part's worth of memory for ``CHATAPP_SEND_TIMEOUT_SECONDS`` at
most. The same watcher, built with ``how=socket.SHUT_RD``, puts a deadline on reading
request bodies (:mod:`.bodies`).

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
from collections.abc import Generator, Iterable, Iterator, Mapping
from typing import Any

from .._concurrency import spawn

__all__ = ["PART_BYTES", "GuardedBody", "SendGuard", "client_socket"]

#: The largest part of a plain response handed to the server in one write.
PART_BYTES = 64 * 1024

log = logging.getLogger("chatapp.sendguard")


def client_socket(environ: Mapping[str, Any]) -> socket.socket | None:
    """The client's socket from a WSGI environ, when the server exposes it."""
    # HTTP/2 multiplexes streams over one socket; shutting it down would end them all.
    if str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/2"):
        return None
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    return sock if hasattr(sock, "shutdown") else None


class SendGuard:
    """Shuts down the sockets of writes that take longer than ``timeout`` seconds.

    ``how`` is what is shut down (both directions for a stalled write; the read side only
    for a stalled body, so its answer can still be written), ``what`` names the wait in
    the log line.
    """

    def __init__(self, timeout: float, *, how: int = socket.SHUT_RDWR, what: str = "a write to a client that stopped reading") -> None:
        self.timeout = timeout
        self.how = how
        self.what = what
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

    def written(self, key: int) -> bool:
        """The server came back for more: the previous write finished.

        ``False`` when the watcher had already given up on it (and shut the socket down).
        """
        with self._lock:
            return self._writes.pop(key, None) is not None

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
        log.info("abandoned %s after %.0f s", self.what, self.timeout)
        # The OS socket under gevent's: gevent's own shutdown() wakes the blocked
        # greenlet with EBADF, which gunicorn logs as an unexpected error with a traceback;
        # the OS call wakes it as the kernel does, with the broken pipe (or end of file)
        # that servers treat as a client gone.
        raw = getattr(sock, "_sock", sock)
        try:
            raw.shutdown(self.how)
        except OSError:
            # Already closed by the client or the server: nothing left to free.
            pass


class GuardedBody:
    """A plain response body, handed to the server in parts, each write under ``guard``.

    A WSGI iterable: the server calls :meth:`close` when it is done or gives up, which
    forgets the write in flight and closes the wrapped body.
    """

    def __init__(self, body: Iterable[bytes], guard: SendGuard, sock: socket.socket) -> None:
        self._body = body
        self._guard = guard
        self._sock = sock
        self._parts = self._generate()

    def __iter__(self) -> Iterator[bytes]:
        return self._parts

    def _generate(self) -> Generator[bytes, None, None]:
        key = id(self)
        for chunk in self._body:
            for start in range(0, len(chunk), PART_BYTES):
                self._guard.writing(key, self._sock)
                yield chunk[start : start + PART_BYTES]
                # The server asks for the next part once it has written this one.
                self._guard.written(key)

    def close(self) -> None:
        self._guard.written(id(self))
        self._parts.close()
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
