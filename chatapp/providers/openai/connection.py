"""The HTTP side of one upstream request: its socket (for cancel) and its SSE frames.

- **Cancel.** A turn's watcher shuts the request's socket down. That wakes the blocked
  read at once (a greenlet under gevent, a thread elsewhere; ``close()`` alone does not
  wake a thread blocked in ``recv``) and the upstream sees the connection close, so it
  stops generating. To know the socket from the moment it is connected, before any
  response exists, each turn has a connection of its own (no keep-alive) that reports
  itself through the HTTP client's ``trace`` extension.
- **Frames.** The SDK parses the event stream itself and fails on frames it does not
  expect: a frame with only ``id:`` or ``retry:`` (and, after any ``id:``, every blank
  line) reaches it as an event with empty data, which is not JSON. A response hook
  hands the SDK only the frames that carry ``data``, and notes ``[DONE]``, which the
  SDK swallows, so the provider can tell a finished stream from one that just stopped.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Connection", "current", "on_request", "on_response"]

# The trace events after which the request's connection (plain, then TLS) is known.
_CONNECTED = frozenset({
    "connection.connect_tcp.complete",
    "connection.connect_unix_socket.complete",
    "connection.start_tls.complete",
})

#: The connection of the request being sent in this greenlet or thread.
current: contextvars.ContextVar[Connection | None] = contextvars.ContextVar("chatapp_upstream_connection", default=None)


class Connection:
    """One upstream request: its socket, so a cancel can shut it in any phase, and what
    its event stream said."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream: Any = None
        self._shut = False
        #: Whether ``data: [DONE]`` arrived.
        self.saw_done = False

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event not in _CONNECTED:
            return
        with self._lock:
            self._stream = info.get("return_value")
            shut = self._shut
        if shut:
            # Shut while connecting: close what was just opened.
            self._shutdown()

    def shut(self) -> None:
        with self._lock:
            self._shut = True
        self._shutdown()

    @property
    def was_shut(self) -> bool:
        return self._shut

    def _shutdown(self) -> None:
        stream = self._stream
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            # Already closed (its file descriptor is then -1, so nothing else is hit).
            pass


def on_request(request: Any) -> None:
    """An HTTP-client request hook: have the request's connection report its socket.

    It runs in the greenlet or thread that sends the request, where the turn put its
    :class:`Connection` in :data:`current` (context variables are per greenlet).
    """
    connection = current.get()
    if connection is not None:
        request.extensions["trace"] = connection.trace


def on_response(response: Any) -> None:
    """An HTTP-client response hook: filter an event stream's frames (see the module doc)."""
    connection = current.get()
    content_type = response.headers.get("content-type", "")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if connection is None or not content_type.startswith("text/event-stream") or encoding not in ("", "identity"):
        return
    response.stream = _frames_class(type(response).__module__.partition(".")[0])(response.stream, connection)


@functools.cache
def _frames_class(http_module: str) -> type[_DataFrames]:
    # The HTTP client (httpx2 from openai 3 on, httpx before) reads only its own streams.
    base = importlib.import_module(http_module).SyncByteStream
    return type("DataFrames", (_DataFrames, base), {})


class _DataFrames:
    """A response byte stream that passes on only the SSE frames carrying ``data``."""

    def __init__(self, stream: Any, connection: Connection) -> None:
        self._stream = stream
        self._connection = connection

    def __iter__(self) -> Iterator[bytes]:
        pending = b""
        frame: list[bytes] = []
        for chunk in self._stream:
            pending += chunk
            # A CR at the end may be half of a CRLF: wait for the next chunk.
            held = pending[-1:] == b"\r"
            complete, pending = (pending[:-1], b"\r") if held else (pending, b"")
            lines = complete.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            pending = lines.pop() + pending
            out = []
            for line in lines:
                if line:
                    if not line.startswith(b":"):
                        frame.append(line)
                    continue
                data = [part[5:].removeprefix(b" ") for part in frame if part == b"data" or part.startswith(b"data:")]
                if data:
                    if data[0].startswith(b"[DONE]"):
                        self._connection.saw_done = True
                    out.append(b"\n".join(frame) + b"\n\n")
                frame = []
            if out:
                yield b"".join(out)
        if pending:
            frame.append(pending)
        if any(part.startswith(b"data") for part in frame):
            yield b"\n".join(frame) + b"\n\n"

    def close(self) -> None:
        self._stream.close()
