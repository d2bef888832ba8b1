"""Byte budgets: per message, per session, per owner and per process, and the throttle on
anonymous owners by address, through real gunicorn servers.

The flood test is the hostile client: one address dropping its cookie on every request,
posting 32,000-emoji messages (128,000 bytes each), as fast as it can.
"""

from __future__ import annotations

import threading

import httpx

from tests.support.servers import FAST, ChatServer, ServerFactory, wait_for

EMOJI = "😀"
#: What the flood may grow the worker beyond its budget: the interpreter's own arenas,
#: the memory cache's budget (1 MiB below) and allocator slack, with room to spare on a
#: loaded machine. Without budgets the same flood grows it by hundreds of megabytes.
RSS_SLACK = 48 * 1024 * 1024


def error_code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/json", response.text[:200]
    return str(response.json()["error"]["code"])


def test_messages_are_bounded_in_utf8_bytes(start_server: ServerFactory) -> None:
    server = start_server({**FAST, "CHATAPP_MAX_MESSAGE_BYTES": "4000"})
    with server.client() as client:
        session_id = client.new_session()
        # 1,000 emoji are 1,000 characters (well within the character bound) but 4,000 bytes.
        assert client.post(f"/api/sessions/{session_id}/messages", json={"message": EMOJI * 1000}).status_code == 202
        assert wait_for(lambda: not client.history(session_id)["generating"])
        refused = client.post(f"/api/sessions/{session_id}/messages", json={"message": EMOJI * 1001})
        assert refused.status_code == 413 and error_code(refused) == "message_too_long"
        assert "bytes" in refused.json()["error"]["message"]
        # Stored as UTF-8 and read back as sent.
        assert client.history(session_id)["messages"][0]["content"] == EMOJI * 1000


def test_a_session_and_an_owner_are_bounded_in_bytes(start_server: ServerFactory) -> None:
    server = start_server({**FAST, "CHATAPP_MAX_SESSION_BYTES": "12000", "CHATAPP_MAX_OWNER_BYTES": "20000", "CHATAPP_RATE_LIMIT": "1000/minute"})
    text = "é" * 2500  # 5,000 bytes
    with server.client() as alice, server.client() as bob:
        first = alice.new_session()
        for _ in range(2):
            alice.send_message(first, text)
            assert wait_for(lambda: not alice.history(first)["generating"])
        full = alice.post(f"/api/sessions/{first}/messages", json={"message": text})
        assert full.status_code == 413 and error_code(full) == "history_too_large"
        assert "new chat" in full.json()["error"]["message"]
        kept = alice.history(first)
        assert len(kept["messages"]) == 4
        # The owner's sessions together: a second chat takes one more, then the quota.
        second = alice.new_session()
        alice.send_message(second, text)
        assert wait_for(lambda: not alice.history(second)["generating"])
        over = alice.post(f"/api/sessions/{second}/messages", json={"message": text})
        assert over.status_code == 413 and error_code(over) == "quota_exceeded"
        # Refused means nothing stored; someone else is not affected.
        assert alice.history(first) == kept
        other = bob.new_session()
        bob.send_message(other, text)
        # Deleting a chat makes room again.
        assert alice.delete(f"/api/sessions/{first}").status_code == 204
        assert alice.post(f"/api/sessions/{second}/messages", json={"message": text}).status_code == 202


def test_a_reply_stops_at_its_session_budget(start_server: ServerFactory) -> None:
    server = start_server({"CHATAPP_DEMO_DELAY_MS": "0", "CHATAPP_DEMO_REPLY_WORDS": "5000", "CHATAPP_MAX_SESSION_BYTES": "8000"})
    with server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "a long answer please")
        with client.open_stream(session_id) as stream:
            events = stream.until_end()
        assert events[-1].json()["finish_reason"] == "length"
        reply = client.history(session_id)["messages"][-1]["content"]
        assert 4000 < len(reply.encode()) < 8000


def test_anonymous_owners_are_throttled_by_address(start_server: ServerFactory) -> None:
    server = start_server({**FAST, "CHATAPP_ADDRESS_RATE_LIMIT": "5/minute", "CHATAPP_RATE_LIMIT": "100/minute"})
    statuses = []
    for _ in range(8):
        # A new client each time: no cookie, so a new anonymous owner every request.
        with server.client() as stranger:
            response = stranger.post("/api/sessions", json={})
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert error_code(response) == "rate_limited"
                assert int(response.headers["retry-after"]) >= 1
    assert statuses == [201] * 5 + [429] * 3


def flood(server: ChatServer, count: int, threads: int = 4) -> dict[int, int]:
    """``count`` anonymous 32,000-emoji posts, each from a new owner; statuses by count."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    message = EMOJI * 32_000
    left = iter(range(count))

    def work() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            while True:
                with lock:
                    if next(left, None) is None:
                        return
                http.cookies.clear()
                created = http.post("/api/sessions", json={})
                status = created.status_code
                if status == 201:
                    session_id = created.json()["session_id"]
                    status = http.post(f"/api/sessions/{session_id}/messages", json={"message": message}).status_code
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return statuses


def test_an_anonymous_flood_is_refused_beyond_the_process_budget(start_server: ServerFactory) -> None:
    budget = 32 * 1024 * 1024
    server = start_server(
        {
            **FAST,
            "CHATAPP_MAX_PROCESS_BYTES": str(budget),
            "CHATAPP_CACHE_MAX_BYTES": str(1024 * 1024),
            # Out of the way here, so that the process budget is what stops the flood
            # (the test above shows the address throttle stopping it much sooner).
            "CHATAPP_ADDRESS_RATE_LIMIT": "1000000/minute",
            "CHATAPP_RATE_LIMIT": "1000000/minute",
        }
    )
    # Warm the worker up (imports, first requests) before measuring.
    flood(server, 20, threads=1)
    before = server.worker_rss()
    statuses = flood(server, 2000)
    grown = server.worker_rss() - before
    assert sum(statuses.values()) == 2000
    # Accepted until the budget, then refused with 503 server_busy: never a 500.
    assert statuses.get(202, 0) > 100, statuses
    assert statuses.get(503, 0) > 1000, statuses
    assert set(statuses) <= {202, 503}, statuses
    with httpx.Client(base_url=server.base_url) as http:
        refused = http.post("/api/sessions", json={})
        assert refused.status_code == 503 and error_code(refused) == "server_busy"
        assert int(refused.headers["retry-after"]) >= 1
    assert grown < budget + RSS_SLACK, f"the worker grew {grown / 2**20:.0f} MiB with a budget of {budget / 2**20:.0f} MiB"
    # The server still answers.
    assert server.health()["status"] == "ok"
