"""The JSON API through Flask's test client: statuses, bodies and errors."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from chatapp import ChatApp, create_app
from chatapp.broker.memory import MemoryBroker
from tests.support.api import assert_error, new_session, wait_idle


def test_create_session(client: FlaskClient) -> None:
    response = client.post("/api/sessions", json={})
    assert response.status_code == 201
    body = response.get_json()
    session_id = body["session_id"]
    assert len(session_id) >= 22 and session_id.replace("-", "").replace("_", "").isalnum()
    # The stream's URL carries a token that opens it without the cookie (test_tokens.py).
    assert body["stream_url"].startswith(f"/api/sessions/{session_id}/stream?token=")
    assert body["messages_url"] == f"/api/sessions/{session_id}/messages"
    assert response.headers["Location"] == f"/api/sessions/{session_id}"
    assert client.post("/api/sessions", json={}).get_json()["session_id"] != session_id


def test_history_and_delete(client: FlaskClient) -> None:
    session_id = new_session(client)
    history = client.get(f"/api/sessions/{session_id}").get_json()
    assert history.pop("stream_url").startswith(f"/api/sessions/{session_id}/stream?token=")
    assert history == {"session_id": session_id, "messages": [], "generating": False, "cursor": None}
    posted = client.post(f"/api/sessions/{session_id}/messages", json={"message": "hi"})
    assert posted.status_code == 202
    assert posted.get_json()["stream_url"].startswith(f"/api/sessions/{session_id}/stream?token=")
    body = wait_idle(client, session_id)
    assert [(m["role"], m["content"] != "") for m in body["messages"]] == [("user", True), ("assistant", True)]
    assert body["messages"][0]["content"] == "hi"
    assert body["messages"][1]["id"] == posted.get_json()["message_id"]
    assert client.delete(f"/api/sessions/{session_id}").status_code == 204
    assert_error(client.get(f"/api/sessions/{session_id}"), 404, "session_not_found")
    assert_error(client.delete(f"/api/sessions/{session_id}"), 404, "session_not_found")


def test_another_owner_sees_404_like_an_unknown_session(app: Flask) -> None:
    alice, mallory = app.test_client(), app.test_client()
    session_id = new_session(alice)
    for method, path in [
        ("get", ""),
        ("delete", ""),
        ("post", "/messages"),
        ("post", "/cancel"),
        ("get", "/stream"),
    ]:
        response = getattr(mallory, method)(f"/api/sessions/{session_id}{path}", json={"message": "x"} if path == "/messages" else None)
        assert_error(response, 404, "session_not_found")
    assert alice.get(f"/api/sessions/{session_id}").status_code == 200


def test_owner_callable_decides_and_none_is_401() -> None:
    from chatapp import ChatApp

    current = {"user": None}
    app = Flask("host")
    app.config.update(TESTING=True, CHATAPP_DEMO_DELAY_MS=0)
    ChatApp(app, owner=lambda: current["user"])
    client = app.test_client()
    assert_error(client.post("/api/sessions", json={}), 401, "unauthenticated")
    current["user"] = "alice"
    session_id = new_session(client)
    current["user"] = "bob"
    assert_error(client.get(f"/api/sessions/{session_id}"), 404, "session_not_found")
    current["user"] = "alice"
    assert client.get(f"/api/sessions/{session_id}").status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": "not json", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": b"\xff\xfe{}", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": '"a string"', "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "[1, 2]", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "null", "content_type": "application/json"}, 400, "invalid_json"),
        ({"json": {}}, 400, "invalid_request"),
        ({"json": {"message": ""}}, 400, "invalid_request"),
        ({"json": {"message": " \n\t "}}, 400, "invalid_request"),
        ({"json": {"message": 42}}, 400, "invalid_request"),
        ({"json": {"message": None}}, 400, "invalid_request"),
        ({"json": {"message": ["hi"]}}, 400, "invalid_request"),
        ({"data": '{"message": "\\ud800"}', "content_type": "application/json"}, 400, "invalid_request"),
        ({"data": '{"message": "hi"}', "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"data": "message=hi", "content_type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
        ({}, 415, "unsupported_media_type"),
        ({"json": {"message": "x" * 1001}}, 413, "message_too_long"),
        ({"data": '{"message": "' + "x" * 20000 + '"}', "content_type": "application/json"}, 413, "payload_too_large"),
        ({"data": '{"message": ' + "[" * 5000 + "]" * 5000 + "}", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "[" * 16000, "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": '{"message": "hi"', "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": '{"message": "hi"} {}', "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "\ufeff" + '{"message": "hi"}', "content_type": "application/json"}, 400, "invalid_json"),
        ({"json": {"message": {"text": "hi"}}}, 400, "invalid_request"),
        ({"json": {"message": True}}, 400, "invalid_request"),
        ({"data": '{"message": "hi"}', "content_type": "application/jsonx"}, 415, "unsupported_media_type"),
        ({"data": '{"message": "hi"}', "content_type": "multipart/form-data; boundary=x"}, 415, "unsupported_media_type"),
    ],
)
def test_bad_message_bodies(kwargs: dict, status: int, code: str) -> None:
    app = create_app({"TESTING": True, "CHATAPP_MAX_MESSAGE_CHARS": 1000, "CHATAPP_DEMO_DELAY_MS": 0})
    client = app.test_client()
    session_id = new_session(client)
    client.post(f"/api/sessions/{session_id}/messages", json={"message": "kept"})
    before = wait_idle(client, session_id)
    assert_error(client.post(f"/api/sessions/{session_id}/messages", **kwargs), status, code)
    # A refused request loses nothing already stored.
    assert client.get(f"/api/sessions/{session_id}").get_json() == before


def test_message_at_the_limit_is_accepted() -> None:
    app = create_app({"TESTING": True, "CHATAPP_MAX_MESSAGE_CHARS": 1000, "CHATAPP_DEMO_DELAY_MS": 0})
    client = app.test_client()
    session_id = new_session(client)
    assert client.post(f"/api/sessions/{session_id}/messages", json={"message": "é" * 1000}).status_code == 202


@pytest.mark.parametrize(
    "session_id",
    [
        "nope",
        "x" * 300,
        "A" * 5000,
        "AAAAAAAAAAAAAAAAAAAAA%0D%0ASet-Cookie:x",
        "..%2F..%2Fetc",
        "%00",
        "AAAAAAAAAAAAAAAAAAAAAA",
        "%FF%FE%FD",
        "ü" * 22,
        "AAAAAAAAAAAAAAAAAAAAA%0A",
        "AAAAAAAAAAAAAAAAAAAAAAA",
        "..",
        "%2E%2E",
    ],
)
def test_strange_session_ids_are_404_json(client: FlaskClient, session_id: str) -> None:
    for path in ("", "/stream", "/messages", "/cancel"):
        method = client.post if path in ("/messages", "/cancel") else client.get
        response = method(f"/api/sessions/{session_id}{path}", json={"message": "x"})
        # An id that decodes to a path with "/" matches no route at all: still 404 JSON.
        assert_error(response, 404, "not_found" if "%2F" in session_id else "session_not_found")


@pytest.mark.parametrize(
    "value",
    ["garbage", "1-", "-1", "1-2-3", "12345678901234567890123-0", "1.5-0", "١-٠", "1-0\x00", "0x1-0", "+1-0", "1 -0", "9" * 5000,
     "\xa0", "\u2003", "1-0\xa0"],
)
def test_strange_last_event_ids_are_400_json(client: FlaskClient, value: str) -> None:
    session_id = new_session(client)
    assert_error(client.get(f"/api/sessions/{session_id}/stream", headers={"Last-Event-ID": value}), 400, "invalid_last_event_id")
    assert_error(client.get(f"/api/sessions/{session_id}/stream", query_string={"last_event_id": value}), 400, "invalid_last_event_id")


@pytest.mark.parametrize("value", ["", " ", "\t"])
def test_a_blank_last_event_id_means_none(client: FlaskClient, value: str) -> None:
    session_id = new_session(client)
    assert client.get(f"/api/sessions/{session_id}/stream", query_string={"last_event_id": value}).status_code == 204


def test_wrong_methods_and_unknown_paths_are_json(client: FlaskClient) -> None:
    session_id = new_session(client)
    response = client.put(f"/api/sessions/{session_id}")
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "DELETE"}
    assert_error(client.get("/api/sessions"), 405, "method_not_allowed")
    assert_error(client.get(f"/api/sessions/{session_id}/messages"), 405, "method_not_allowed")
    assert_error(client.get("/api/nothing/here"), 404, "not_found")
    assert_error(client.get("/api"), 404, "not_found")


def test_cancel_without_a_turn(client: FlaskClient) -> None:
    session_id = new_session(client)
    response = client.post(f"/api/sessions/{session_id}/cancel")
    assert response.status_code == 202
    assert response.get_json() == {"cancelled": False}


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "broker": {"backend": "memory", "ok": True}, "streams": 0, "heartbeat_seconds": 15.0}


def test_page_is_html(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert b'data-api-base="/api/sessions"' in response.data
    assert client.get("/static/chatapp.js").status_code == 200


def test_init_app_twice_is_refused(app: Flask) -> None:
    from chatapp import ChatApp

    with pytest.raises(RuntimeError, match="already registered"):
        ChatApp(app)


class CountingBroker(MemoryBroker):
    """The memory broker, counting history loads (whole, or a page)."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    def get_session(self, session_id: str):  # type: ignore[no-untyped-def]
        self.loads += 1
        return super().get_session(session_id)

    def history_page(self, session_id: str, **page):  # type: ignore[no-untyped-def]
        self.loads += 1
        return super().history_page(session_id, **page)


def test_only_a_history_read_loads_the_history() -> None:
    broker = CountingBroker()
    host = Flask("host")
    host.config.update(TESTING=True, SECRET_KEY="k", CHATAPP_DEMO_DELAY_MS=0, CHATAPP_DEMO_REPLY_WORDS=3)
    ChatApp(host, broker=broker)
    client = host.test_client()
    session_id = new_session(client)
    assert client.post(f"/api/sessions/{session_id}/messages", json={"message": "hi"}).status_code == 202
    client.post(f"/api/sessions/{session_id}/cancel")
    client.get(f"/api/sessions/{session_id}/stream?last_event_id=99999999999999-0")
    assert broker.loads == 0
    wait_idle(client, session_id)
    assert broker.loads >= 1
