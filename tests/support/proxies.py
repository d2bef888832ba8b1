"""Small HTTP reverse proxies on loopback that misbehave the way real ones do.

- ``pass``: relays bytes as they come (a well-configured proxy);
- ``buffer``: holds the response body until it ends or ``buffer_bytes`` gathered (nginx
  with ``proxy_buffering on``, many PaaS routers);
- ``gzip``: compresses the body for clients that accept gzip, emitting only what the
  compressor gives up (nginx ``gzip on`` for every type, some CDNs);
- ``idle``: closes a response that stays quiet for ``idle_timeout`` seconds (a short
  ``proxy_read_timeout`` or load balancer idle timeout).

One connection per request (``Connection: close`` both ways) keeps the relay simple.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import zlib

from tests.support.servers import free_port

MODES = ("pass", "buffer", "gzip", "idle")


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head (up to the blank line) and whatever body bytes came with it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the head ended")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _with_headers(head: bytes, drop: set[str], add: list[str]) -> bytes:
    lines = head.split(b"\r\n")
    kept = [lines[0]] + [line for line in lines[1:] if line.split(b":", 1)[0].strip().lower().decode() not in drop]
    return b"\r\n".join(kept + [h.encode() for h in add]) + b"\r\n\r\n"


def _header(head: bytes, name: str) -> str:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.encode():
            return value.strip().decode("latin-1")
    return ""


class Dechunker:
    """Undo ``Transfer-Encoding: chunked`` incrementally."""

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = b""
        while not self.done:
            if self._left:
                piece = self._buffer[: self._left]
                self._buffer = self._buffer[len(piece) :]
                self._left -= len(piece)
                out += piece
                if self._left:
                    return out
                continue
            line, sep, rest = self._buffer.partition(b"\r\n")
            if not sep:
                return out
            if line == b"":  # the CRLF after a chunk's data
                self._buffer = rest
                continue
            size = int(line.split(b";")[0], 16)
            self._buffer = rest
            if size == 0:
                self.done = True
            self._left = size
        return out


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


class Proxy:
    """A reverse proxy for ``127.0.0.1:upstream_port`` with one of :data:`MODES`."""

    def __init__(self, upstream_port: int, mode: str, *, buffer_bytes: int = 65536, idle_timeout: float = 1.0) -> None:
        assert mode in MODES
        self.upstream_port = upstream_port
        self.mode = mode
        self.buffer_bytes = buffer_bytes
        self.idle_timeout = idle_timeout
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True, name=f"proxy-{mode}").start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            self._track(client)
            head, body = _read_head(client)
            length = int(_header(head, "content-length") or 0)
            while len(body) < length:
                body += client.recv(65536)
            gzip_ok = "gzip" in _header(head, "accept-encoding")
            # Like most proxies, ask the upstream for an uncompressed body.
            head = _with_headers(head, {"connection", "accept-encoding"}, ["Connection: close"])
            upstream = self._track(socket.create_connection(("127.0.0.1", self.upstream_port)))
            upstream.sendall(head + body)
            response_head, first = _read_head(upstream)
            self._relay(client, upstream, response_head, first, gzip_ok)
        except (OSError, ConnectionError, ValueError):
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()

    def _relay(self, client: socket.socket, upstream: socket.socket, head: bytes, first: bytes, gzip_ok: bool) -> None:
        status = head.split(b"\r\n", 1)[0].split(b" ")[1]
        compress = self.mode == "gzip" and gzip_ok and status == b"200"
        chunked = "chunked" in _header(head, "transfer-encoding").lower()
        if compress:
            added = ["Connection: close", "Content-Encoding: gzip"] + ([] if chunked else ["Transfer-Encoding: chunked"])
            head = _with_headers(head, {"connection", "content-length"}, added)
        else:
            head = _with_headers(head, {"connection"}, ["Connection: close"])
        client.sendall(head)
        dechunk = Dechunker() if chunked else None
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        held = b""

        def forward(data: bytes) -> None:
            nonlocal held
            if compress:
                plain = dechunk.feed(data) if dechunk else data
                client.sendall(_chunk(compressor.compress(plain)))
            elif self.mode == "buffer":
                held += data
                if len(held) >= self.buffer_bytes:
                    client.sendall(held)
                    held = b""
            else:
                client.sendall(data)

        if first:
            forward(first)
        selector = selectors.DefaultSelector()
        selector.register(upstream, selectors.EVENT_READ, "upstream")
        selector.register(client, selectors.EVENT_READ, "client")
        timeout = self.idle_timeout if self.mode == "idle" else None
        try:
            while not self._stopped:
                ready = selector.select(timeout)
                if not ready:
                    return  # quiet too long: cut both sides, as an idle timeout does
                for key, _ in ready:
                    data = key.fileobj.recv(65536)
                    if key.data == "client":
                        if not data:
                            return  # the client left
                        continue
                    if not data:
                        if compress:
                            client.sendall(_chunk(compressor.flush()) + b"0\r\n\r\n")
                        elif held:
                            client.sendall(held)
                        return
                    forward(data)
        finally:
            selector.close()

    def stop(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
