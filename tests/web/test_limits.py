"""Bounds that keep one owner from exhausting the server: sessions, history, open streams,
idle expiry and message size."""

from __future__ import annotations

import time

from chatapp import create_app
from tests.support.api import assert_error, new_session, wait_idle
from tests.support.servers import ServerFactory, wait_for


def test_sessions_per_owner_are_bounded() -> None:
    app = create_app({"TESTING": True, "CHATAPP_MAX_SESSIONS_PER_OWNER": 3, "CHATAPP_RATE_LIMIT": "100/minute"})
    alice, bob = app.test_client(), app.test_client()
    ids = [new_session(alice) for _ in range(3)]
    assert_error(alice.post("/api/sessions", json={}), 409, "too_many_sessions")
    # Others are not affected, and the refused owner loses nothing.
    new_session(bob)
    for session_id in ids:
        assert alice.get(f"/api/sessions/{session_id}").status_code == 200
    # Deleting one makes room for one.
    assert alice.delete(f"/api/sessions/{ids[0]}").status_code == 204
    new_session(alice)
    assert_error(alice.post("/api/sessions", json={}), 409, "too_many_sessions")


def test_history_is_bounded_and_a_full_chat_keeps_everything() -> None:
    app = create_app({"TESTING": True, "CHATAPP_MAX_SESSION_MESSAGES": 4, "CHATAPP_DEMO_DELAY_MS": 0, "CHATAPP_DEMO_REPLY_WORDS": 3})
    client = app.test_client()
    session_id = new_session(client)
    for text in ("one", "two"):
        assert client.post(f"/api/sessions/{session_id}/messages", json={"message": text}).status_code == 202
        wait_idle(client, session_id)
    full = client.get(f"/api/sessions/{session_id}").get_json()
    assert len(full["messages"]) == 4
    response = client.post(f"/api/sessions/{session_id}/messages", json={"message": "three"})
    assert_error(response, 409, "history_full")
    assert "4" in response.get_json()["error"]["message"]
    # Refused, not trimmed: the stored conversation is untouched.
    assert client.get(f"/api/sessions/{session_id}").get_json() == full
    # A new chat goes on.
    other = new_session(client)
    assert client.post(f"/api/sessions/{other}/messages", json={"message": "three"}).status_code == 202


def test_idle_sessions_expire() -> None:
    app = create_app({"TESTING": True, "CHATAPP_SESSION_TTL_SECONDS": 1, "CHATAPP_MAX_SESSIONS_PER_OWNER": 1})
    client = app.test_client()
    session_id = new_session(client)
    assert_error(client.post("/api/sessions", json={}), 409, "too_many_sessions")
    time.sleep(1.5)
    assert_error(client.get(f"/api/sessions/{session_id}"), 404, "session_not_found")
    # An expired session no longer counts against the owner.
    new_session(client)


def test_message_length_is_bounded_in_characters_not_bytes() -> None:
    app = create_app({"TESTING": True, "CHATAPP_MAX_MESSAGE_CHARS": 10, "CHATAPP_DEMO_DELAY_MS": 0})
    client = app.test_client()
    session_id = new_session(client)
    assert_error(client.post(f"/api/sessions/{session_id}/messages", json={"message": "x" * 11}), 413, "message_too_long")
    assert client.post(f"/api/sessions/{session_id}/messages", json={"message": "🙂" * 10}).status_code == 202


def test_open_streams_per_owner_are_capped_and_a_slot_frees_when_its_client_leaves(start_server: ServerFactory) -> None:
    server = start_server(
        {
            "CHATAPP_MAX_STREAMS_PER_OWNER": "2",
            "CHATAPP_DEMO_DELAY_MS": "200",
            "CHATAPP_DEMO_REPLY_WORDS": "200",
            "CHATAPP_HEARTBEAT_SECONDS": "0.3",
        }
    )
    with server.client() as alice, server.client() as bob:
        session_id = alice.new_session()
        alice.send_message(session_id, "keep streaming")
        with alice.open_stream(session_id) as first:
            with alice.open_stream(session_id) as second:
                assert (first.status_code, second.status_code) == (200, 200)
                refused = alice.get(f"/api/sessions/{session_id}/stream")
                assert refused.status_code == 429
                assert refused.headers["content-type"] == "application/json"
                assert refused.json()["error"]["code"] == "too_many_streams"
                assert int(refused.headers["retry-after"]) >= 1
                # The cap is per owner: someone else still gets a stream of their own.
                other = bob.new_session()
                bob.send_message(other, "mine")
                with bob.open_stream(other) as mine:
                    assert mine.status_code == 200

            # The second client left; the server notices at its next write (a heartbeat
            # at most) and frees the slot.
            def next_stream_is_200() -> bool:
                with alice.stream("GET", f"/api/sessions/{session_id}/stream") as response:
                    return response.status_code == 200

            assert wait_for(next_stream_is_200, timeout=10, interval=0.2)
        alice.post(f"/api/sessions/{session_id}/cancel")
        bob.post(f"/api/sessions/{other}/cancel")
