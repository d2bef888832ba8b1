"""History is paged and bounded: a page of the newest messages with a cursor for older
ones, at most so many messages and bytes, rate-limited, and every answer under the send
timeout, so clients asking for a full chat and never reading cannot pin the server."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx

from chatapp import create_app
from tests.support.api import assert_error, new_session, wait_idle
from tests.support.servers import FAST, ChatClient, ChatServer, ServerFactory, wait_for

EMOJI = "😀"


def test_pages_walk_the_whole_history_by_cursor() -> None:
    app = create_app(
        {"TESTING": True, "CHATAPP_DEMO_DELAY_MS": 0, "CHATAPP_DEMO_REPLY_WORDS": 3, "CHATAPP_HISTORY_PAGE_MESSAGES": 3, "CHATAPP_RATE_LIMIT": "1000/minute"}
    )
    client = app.test_client()
    session_id = new_session(client)
    for index in range(4):
        assert client.post(f"/api/sessions/{session_id}/messages", json={"message": f"m{index}"}).status_code == 202
        wait_idle(client, session_id)
    pages = []
    query = ""
    while True:
        page = client.get(f"/api/sessions/{session_id}{query}").get_json()
        pages.append(page["messages"])
        assert len(page["messages"]) <= 3
        if page["cursor"] is None:
            break
        query = f"?before={page['cursor']}"
    # Newest first page by page, each page in order: together, the whole conversation.
    walked = [m for page in reversed(pages) for m in page]
    assert [m["content"] for m in walked if m["role"] == "user"] == ["m0", "m1", "m2", "m3"]
    assert len(walked) == 8 and len(pages) == 3
    # ?limit asks for fewer; bad values are a 400, not a 500.
    assert len(client.get(f"/api/sessions/{session_id}?limit=1").get_json()["messages"]) == 1
    for bad in ("limit=0", "limit=4", "limit=x", "before=-1", "before=1e3", "limit=%EF%BC%91"):
        assert_error(client.get(f"/api/sessions/{session_id}?{bad}"), 400, "invalid_request")


def test_a_page_is_bounded_in_bytes_yet_holds_at_least_one_message() -> None:
    app = create_app({"TESTING": True, "CHATAPP_DEMO_DELAY_MS": 0, "CHATAPP_DEMO_REPLY_WORDS": 3, "CHATAPP_HISTORY_PAGE_BYTES": 5000})
    client = app.test_client()
    session_id = new_session(client)
    assert client.post(f"/api/sessions/{session_id}/messages", json={"message": EMOJI * 2000}).status_code == 202
    wait_idle(client, session_id)
    page = client.get(f"/api/sessions/{session_id}").get_json()
    # The reply fits; the 8,000-byte message before it does not join it.
    assert [m["role"] for m in page["messages"]] == ["assistant"] and page["cursor"] == "1"
    older = client.get(f"/api/sessions/{session_id}?before=1")
    assert older.get_json()["messages"][0]["content"] == EMOJI * 2000 and older.get_json()["cursor"] is None
    # In UTF-8, about its stored size: not 12 bytes of escapes for every emoji (the
    # framing around it is ids, flags and the stream_url with its token).
    assert b"\\u" not in older.data and len(older.data) < 8000 + 400


def test_history_reads_are_rate_limited() -> None:
    app = create_app({"TESTING": True, "CHATAPP_HISTORY_RATE_LIMIT": "3/minute"})
    client, other = app.test_client(), app.test_client()
    session_id = new_session(client)
    for _ in range(3):
        assert client.get(f"/api/sessions/{session_id}").status_code == 200
    limited = client.get(f"/api/sessions/{session_id}")
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    # Per owner: someone else reads on.
    assert other.get(f"/api/sessions/{new_session(other)}").status_code == 200


def fill_chat(client: ChatClient, session_id: str, messages: int) -> None:
    """``messages`` turns of 32,000-emoji messages (128,000 bytes each)."""
    for _ in range(messages):
        client.send_message(session_id, EMOJI * 32_000)
        assert wait_for(lambda: not client.history(session_id)["generating"], timeout=30)


@contextmanager
def stalled_history_read(server: ChatServer, client: ChatClient, session_id: str) -> Iterator[socket.socket]:
    """A history request from ``client``'s owner whose answer is never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    sock.sendall(f"GET /api/sessions/{session_id} HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\n\r\n".encode())
    try:
        yield sock
    finally:
        sock.close()


def test_40_stalled_history_readers_pin_only_their_send_buffers(start_server: ServerFactory) -> None:
    readers = 40
    server = start_server(
        {
            **FAST,
            "CHATAPP_RATE_LIMIT": "1000/minute",
            "CHATAPP_HISTORY_RATE_LIMIT": "1000/minute",
            "CHATAPP_SEND_TIMEOUT_SECONDS": "300",
        }
    )
    page_bytes = 262_144  # the default CHATAPP_HISTORY_PAGE_BYTES
    with server.client() as owner, server.client() as other:
        session_id = owner.new_session()
        # A full chat: the session's byte budget (2 MiB by default) refuses the next one.
        fill_chat(owner, session_id, 16)
        refused = owner.post(f"/api/sessions/{session_id}/messages", json={"message": EMOJI * 32_000})
        assert refused.status_code == 413
        before = server.worker_rss()
        with ExitStack() as stalled:
            for _ in range(readers):
                stalled.enter_context(stalled_history_read(server, owner, session_id))
            time.sleep(1)
            # Someone else is served as usual meanwhile.
            started = time.monotonic()
            mine = other.new_session()
            other.send_message(mine, "still there?")
            with other.open_stream(mine) as stream:
                assert stream.until_end()[-1].json()["finish_reason"] == "stop"
            assert httpx.get(server.base_url + "/healthz", timeout=5).status_code == 200
            served_in = time.monotonic() - started
            grown = server.worker_rss() - before
    # Each stalled reader holds at most its page (and one write of it); without pages
    # each would hold the whole chat, and without byte budgets the chat had no bound.
    assert grown < readers * 2 * page_bytes + 16 * 2**20, f"the worker grew {grown / 2**20:.1f} MiB for {readers} stalled readers"
    assert served_in < 10, f"another client waited {served_in:.1f} s"


def test_a_plain_answer_nobody_reads_is_abandoned_after_the_send_timeout(start_server: ServerFactory) -> None:
    # Pages large enough to outgrow the socket buffers, so the write blocks.
    server = start_server(
        {
            **FAST,
            "CHATAPP_RATE_LIMIT": "1000/minute",
            "CHATAPP_HISTORY_PAGE_BYTES": str(16 * 2**20),
            "CHATAPP_HISTORY_PAGE_MESSAGES": "200",
            "CHATAPP_MAX_SESSION_BYTES": str(16 * 2**20),
            "CHATAPP_MAX_OWNER_BYTES": str(16 * 2**20),
            "CHATAPP_SEND_TIMEOUT_SECONDS": "1",
        }
    )
    with server.client() as owner:
        session_id = owner.new_session()
        fill_chat(owner, session_id, 50)
        whole = len(owner.get(f"/api/sessions/{session_id}").content)
        assert whole > 6_000_000
        with stalled_history_read(server, owner, session_id) as sock:
            time.sleep(4)
            # The server gave up on the write and closed the connection: what the
            # buffers held arrives, then the end, well short of the whole answer.
            sock.settimeout(10)
            received = 0
            while chunk := sock.recv(65536):
                received += len(chunk)
        assert 0 < received < whole
        # An ordinary slow client: no traceback in the server's log.
        assert "Traceback" not in server.log()
