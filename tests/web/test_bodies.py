"""Request bodies have a deadline: a body that stops arriving is answered 408 and its
connection closed, whether its length was declared or it was chunked, and the server
goes on answering everyone else (``/healthz`` included) meanwhile."""

from __future__ import annotations

import json
import socket
import time
from contextlib import ExitStack

import httpx
import pytest

from tests.support.servers import FAST, ChatServer, ServerFactory

DEADLINE = 1.0
#: More stalled bodies than a gthread worker has threads (the tests' servers run 32).
STALLED = 40


@pytest.fixture(scope="module", params=["gevent", "gthread"])
def server(start_server: ServerFactory, request: pytest.FixtureRequest) -> ChatServer:
    return start_server({**FAST, "CHATAPP_BODY_TIMEOUT_SECONDS": str(DEADLINE)}, kind=request.param)


def stalled_body(server: ChatServer, *, chunked: bool, path: str = "/api/sessions") -> socket.socket:
    """A POST whose body begins and then stops coming."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
    if chunked:
        sock.sendall((head + "Transfer-Encoding: chunked\r\n\r\n" + "5\r\n{\"a\":\r\n").encode())
    else:
        sock.sendall((head + "Content-Length: 1000\r\n\r\n" + '{"a":').encode())
    return sock


def answer(sock: socket.socket) -> tuple[int, dict, float]:
    """The status and JSON body the server sent, and when the connection closed."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    closed = time.monotonic()
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body), closed


def test_stalled_bodies_get_408_within_the_deadline_and_health_stays_answerable(server: ChatServer) -> None:
    with ExitStack() as stack:
        started = time.monotonic()
        # Bodies for a view that reads them, and for views that never would (a cancel, an
        # unknown path): all of them are read, within the deadline, before any view runs.
        paths = ["/api/sessions", "/api/sessions/AAAAAAAAAAAAAAAAAAAAAA/cancel", "/api/nowhere"]
        socks = [
            stack.enter_context(stalled_body(server, chunked=index % 2 == 1, path=paths[index % 3])) for index in range(STALLED)
        ]
        # While they wait, the server answers others at once.
        assert httpx.get(server.base_url + "/healthz", timeout=DEADLINE * 5).status_code == 200
        for sock in socks:
            status, body, closed = answer(sock)
            assert (status, body["error"]["code"]) == (408, "body_timeout")
            assert "seconds" in body["error"]["message"]
            # Answered, and the connection closed (recv saw its end), within the deadline
            # and the watcher's period; generous for a loaded machine.
            assert closed - started < DEADLINE + 5
    assert httpx.get(server.base_url + "/healthz", timeout=5).status_code == 200
    assert "Traceback" not in server.log()


def test_a_trickling_body_is_cut_at_the_deadline(server: ChatServer) -> None:
    with stalled_body(server, chunked=False) as sock:
        started = time.monotonic()
        sock.settimeout(0.2)
        received = b""
        # A byte every 0.2 s keeps every read short, but the body never ends in time.
        while time.monotonic() - started < DEADLINE + 5:
            try:
                sock.sendall(b" ")
                received += sock.recv(65536)
                if received:
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        sock.settimeout(10)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError:
            pass
    assert received.startswith(b"HTTP/1.1 408 "), received[:100]


def test_a_body_that_arrives_in_time_is_read_as_usual(server: ChatServer) -> None:
    with server.client() as client:
        session_id = client.new_session()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
        body = b'{"message": "in two parts"}'
        head = (
            f"POST /api/sessions/{session_id}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with sock:
            sock.sendall(head.encode() + body[:10])
            time.sleep(DEADLINE / 4)
            sock.sendall(body[10:])
            status, answered, _ = answer(sock)
        assert status == 202 and answered["message_id"]
