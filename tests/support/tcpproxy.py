"""A TCP proxy on loopback whose open connections a test can cut, like a network drop."""

from __future__ import annotations

import socket
import threading
import time

from tests.support.servers import free_port


class TCPProxy:
    """Forwards 127.0.0.1:<port> to a local server; ``drop()`` cuts every open connection.

    ``trickle``: send what the server answers in writes of at most that many bytes, each
    its own TCP segment, so the client reads chunks that split characters and lines.
    """

    def __init__(self, target_port: int, *, trickle: int | None = None) -> None:
        self.target_port = target_port
        self.trickle = trickle
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        #: Everything clients sent, per connection, so tests can read the requests.
        self.sent: list[bytearray] = []
        self._lock = threading.Lock()
        self._open: list[tuple[socket.socket, socket.socket]] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="tcpproxy-accept").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            if self.trickle:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            record = bytearray()
            with self._lock:
                self._open.append((client, upstream))
                self.sent.append(record)
            threading.Thread(target=self._pump, args=(client, upstream, record), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None, self.trickle), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, record: bytearray | None, trickle: int | None = None) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if record is not None:
                    record += data
                if not trickle:
                    sink.sendall(data)
                    continue
                for start in range(0, len(data), trickle):
                    sink.sendall(data[start : start + trickle])
                    # A pause lets each piece leave alone rather than merge with the next.
                    time.sleep(0.0005)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def requests(self) -> str:
        """All request bytes sent so far, as text."""
        with self._lock:
            return "".join(bytes(r).decode("latin-1") for r in self.sent)

    def drop(self) -> int:
        """Cut every open connection, both ways; returns how many there were."""
        with self._lock:
            pairs, self._open = self._open, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        return len(pairs)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.drop()
