"""Bad input through a real gunicorn server, byte for byte over raw sockets.

Each request is something an HTTP client library would refuse to send: raw CR, LF and
invalid UTF-8 in the request line, over-long ids, bodies far over the limit, chunked
bodies without Content-Length, broken framing. Each must get a JSON error with the
right status (from the app, or from gunicorn itself when the request never parses),
never a 500 and never HTML, and must leave what is stored untouched.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.support.servers import ChatClient, ChatServer, ServerFactory, wait_for

MAX_CHARS = 1000
BODY_LIMIT = MAX_CHARS * 12 + 4096


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    header_lines: list[bytes]
    body: bytes

    def error_code(self) -> str:
        return json.loads(self.body)["error"]["code"]


def send_raw(server: ChatServer, data: bytes) -> RawResponse:
    """Send ``data`` as is and read the answer until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            # The server answered and closed before taking everything; read the answer.
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            # Closing with unread request bytes makes the kernel reset the connection
            # after the answer; what arrived before the reset is the answer.
            pass
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 "), received[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(lines[0].split()[1]), headers, lines[1:], body)


@pytest.fixture(scope="module", params=["gevent", "gthread"])
def server(start_server: ServerFactory, request: pytest.FixtureRequest) -> ChatServer:
    env = {"CHATAPP_MAX_MESSAGE_CHARS": str(MAX_CHARS), "CHATAPP_DEMO_DELAY_MS": "1", "CHATAPP_DEMO_REPLY_WORDS": "5"}
    return start_server(env, kind=request.param)


@pytest.fixture
def owner(server: ChatServer) -> tuple[ChatClient, str, bytes]:
    """A client with a finished turn in its session, and the raw headers of its owner."""
    client = server.client()
    session_id = client.new_session()
    client.send_message(session_id, "keep this")
    assert wait_for(lambda: not client.history(session_id)["generating"])
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    yield client, session_id, f"Host: localhost\r\nCookie: {cookie}\r\nConnection: close\r\n".encode()
    client.close()


Build = Callable[[str, bytes], bytes]


def post(path: str, extra: bytes, body: bytes) -> Build:
    return lambda sid, headers: f"POST {path.format(sid=sid)} HTTP/1.1\r\n".encode() + headers + extra + b"\r\n" + body


def get(target: bytes, extra: bytes = b"") -> Build:
    return lambda sid, headers: b"GET " + target.replace(b"{sid}", sid.encode()) + b" HTTP/1.1\r\n" + headers + extra + b"\r\n"


JSON = b"Content-Type: application/json\r\n"
MESSAGES = "/api/sessions/{sid}/messages"


def length(body: bytes) -> bytes:
    return f"Content-Length: {len(body)}\r\n".encode()


def chunked(body: bytes, size: int = 4096) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"


BAD_BODY = b'{"message": "\xff\xfe"}'
HUGE_BODY = b'{"message": "' + b"x" * (BODY_LIMIT * 3) + b'"}'
LONG_MESSAGE = json.dumps({"message": "y" * (MAX_CHARS + 1)}).encode()

CASES: dict[str, tuple[Build, int, str]] = {
    # Reach the app: its JSON errors.
    "invalid UTF-8 in the body": (post(MESSAGES, JSON + length(BAD_BODY), BAD_BODY), 400, "invalid_json"),
    "invalid UTF-8 in a chunked body": (post(MESSAGES, JSON + b"Transfer-Encoding: chunked\r\n", chunked(BAD_BODY)), 400, "invalid_json"),
    "percent-encoded invalid UTF-8 in the id": (get(b"/api/sessions/%FF%FE%80/stream"), 404, "session_not_found"),
    "percent-encoded CR LF in the id": (get(b"/api/sessions/AAAAAAAAAAAAAAAAAAAAA%0D%0ASet-Cookie:%20x=1"), 404, "session_not_found"),
    "percent-encoded NUL in the id": (get(b"/api/sessions/%00AAAAAAAAAAAAAAAAAAAAA/stream"), 404, "session_not_found"),
    "dot segments in the path": (get(b"/api/sessions/{sid}/../../healthz/x"), 404, "not_found"),
    "an id of 3000 characters": (get(b"/api/sessions/" + b"A" * 3000), 404, "session_not_found"),
    "a body declared far over the limit": (post(MESSAGES, JSON + b"Content-Length: 100000000\r\n", b""), 413, "payload_too_large"),
    "a chunked body over the limit": (post(MESSAGES, JSON + b"Transfer-Encoding: chunked\r\n", chunked(HUGE_BODY)), 413, "payload_too_large"),
    "a chunked message over the limit": (post(MESSAGES, JSON + b"Transfer-Encoding: chunked\r\n", chunked(LONG_MESSAGE)), 413, "message_too_long"),
    "a body that is not JSON": (post(MESSAGES, b"Content-Type: text/plain\r\n" + length(b"hi"), b"hi"), 415, "unsupported_media_type"),
    "invalid UTF-8 in Last-Event-ID": (get(b"/api/sessions/{sid}/stream", b"Last-Event-ID: \xff\xfe1-0\r\n"), 400, "invalid_last_event_id"),
    "invalid UTF-8 in last_event_id": (get(b"/api/sessions/{sid}/stream?last_event_id=%FF1-0"), 400, "invalid_last_event_id"),
    "a wrong method": (lambda sid, headers: f"PATCH /api/sessions/{sid} HTTP/1.1\r\n".encode() + headers + b"\r\n", 405, "method_not_allowed"),
    "TRACE": (lambda sid, headers: f"TRACE /api/sessions/{sid} HTTP/1.1\r\n".encode() + headers + b"\r\n", 405, "method_not_allowed"),
    "a method nobody knows": (lambda sid, headers: b"BREW /api/sessions HTTP/1.1\r\n" + headers + b"\r\n", 405, "method_not_allowed"),
    "a percent-encoded LF before a known path's end": (get(b"/api/sessions/abc%0A/messages"), 405, "method_not_allowed"),
    # Never parse as HTTP: gunicorn answers, in the same JSON shape.
    "raw invalid UTF-8 in the request line": (get(b"/api/sessions/\xff\xfe/stream"), 400, "bad_request"),
    "a raw CR in the request line": (get(b"/api/sessions/AAAA\rAAAA"), 400, "bad_request"),
    "a raw LF in the request line": (get(b"/api/sessions/AAAA\nSet-Cookie: x=1"), 400, "bad_request"),
    "an id of 10000 characters": (get(b"/api/sessions/" + b"A" * 10000), 414, "uri_too_long"),
    "a Content-Length that is not a number": (post(MESSAGES, JSON + b"Content-Length: lots\r\n", b"{}"), 400, "bad_request"),
    "two Content-Lengths": (post(MESSAGES, JSON + b"Content-Length: 2\r\nContent-Length: 3\r\n", b"{}"), 400, "bad_request"),
    "a chunk size that is not hex": (post(MESSAGES, JSON + b"Transfer-Encoding: chunked\r\n", b"zz\r\n{}\r\n0\r\n\r\n"), 400, "invalid_body"),
    "a chunk without its CR LF": (post(MESSAGES, JSON + b"Transfer-Encoding: chunked\r\n", b"2\r\n{}XX0\r\n\r\n"), 400, "invalid_body"),
}


def stored(client: ChatClient, session_id: str) -> dict:
    """The session as stored: its history less the stream_url, whose token is new each time."""
    history = client.history(session_id)
    del history["stream_url"]
    return history


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_json_error_and_loses_nothing(server: ChatServer, owner: tuple, case: str) -> None:
    client, session_id, headers = owner
    before = stored(client, session_id)
    build, status, code = CASES[case]
    response = send_raw(server, build(session_id, headers))
    assert response.status == status, response.body[:300]
    assert response.headers["content-type"] == "application/json"
    assert b"<html" not in response.body.lower()
    assert response.error_code() == code
    # Nothing the client put in a path or header came back as a header of its own.
    assert not any(line.lower().startswith(b"set-cookie: x") for line in response.header_lines)
    assert stored(client, session_id) == before
    assert server.health()["status"] == "ok"


def test_a_chunked_body_without_content_length_is_read(server: ChatServer, owner: tuple) -> None:
    client, session_id, headers = owner
    body = json.dumps({"message": "sent in chunks " * 20}).encode()
    response = send_raw(server, post(MESSAGES, JSON + b"Transfer-Encoding: chunked\r\n", chunked(body, size=7))(session_id, headers))
    assert response.status == 202, response.body
    assert wait_for(lambda: not client.history(session_id)["generating"])
    assert client.history(session_id)["messages"][-2]["content"] == "sent in chunks " * 20


def test_options_answers_the_methods_a_path_really_takes(server: ChatServer, owner: tuple) -> None:
    _, session_id, headers = owner
    for path, allowed in (
        (f"/api/sessions/{session_id}/stream", {"GET", "HEAD", "OPTIONS"}),
        (f"/api/sessions/{session_id}", {"GET", "HEAD", "DELETE", "OPTIONS"}),
        ("/api/sessions", {"POST", "OPTIONS"}),
    ):
        response = send_raw(server, f"OPTIONS {path} HTTP/1.1\r\n".encode() + headers + b"\r\n")
        assert response.status == 204 and response.body == b""
        assert set(response.headers["allow"].split(", ")) == allowed
        assert "text/html" not in response.headers.get("content-type", "")
    unknown = send_raw(server, b"OPTIONS /api/nowhere HTTP/1.1\r\n" + headers + b"\r\n")
    assert (unknown.status, unknown.error_code()) == (404, "not_found")


def test_every_api_answer_says_nosniff(server: ChatServer, owner: tuple) -> None:
    _, session_id, headers = owner
    for target in (f"/api/sessions/{session_id}".encode(), b"/api/nowhere", b"/healthz"):
        response = send_raw(server, get(target)(session_id, headers))
        assert response.headers["x-content-type-options"] == "nosniff"
