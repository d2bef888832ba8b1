"""Per-owner rate limits on creating sessions and posting messages."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from chatapp import ChatApp, create_app
from chatapp.config import Settings
from chatapp.errors import ConfigError
from chatapp.web.ratelimit import storage_uri
from tests.support.api import assert_error, new_session, wait_idle
from tests.support.servers import FAST, ServerFactory


def limited_app(limit: str = "3/minute", **config: object) -> Flask:
    return create_app({"TESTING": True, "CHATAPP_DEMO_DELAY_MS": 0, "CHATAPP_RATE_LIMIT": limit, **config})


def assert_rate_limited(response, window: int = 60) -> None:
    assert_error(response, 429, "rate_limited")
    assert 1 <= int(response.headers["Retry-After"]) <= window


def test_creating_sessions_is_limited_per_owner() -> None:
    app = limited_app("3/minute")
    alice, bob = app.test_client(), app.test_client()
    for _ in range(3):
        new_session(alice)
    assert_rate_limited(alice.post("/api/sessions", json={}))
    # Another owner has a budget of their own.
    new_session(bob)


def test_messages_and_sessions_share_one_budget() -> None:
    app = limited_app("3/minute")
    client = app.test_client()
    session_id = new_session(client)
    assert client.post(f"/api/sessions/{session_id}/messages", json={"message": "one"}).status_code == 202
    wait_idle(client, session_id)
    assert client.post(f"/api/sessions/{session_id}/messages", json={"message": "two"}).status_code == 202
    wait_idle(client, session_id)
    before = client.get(f"/api/sessions/{session_id}").get_json()
    assert_rate_limited(client.post(f"/api/sessions/{session_id}/messages", json={"message": "three"}))
    assert_rate_limited(client.post("/api/sessions", json={}))
    # Refused, and nothing was stored for it; reading stays free.
    for _ in range(5):
        assert client.get(f"/api/sessions/{session_id}").get_json() == before


def test_reads_cancels_and_preflights_are_not_counted() -> None:
    app = limited_app("2/minute")
    client = app.test_client()
    session_id = new_session(client)
    for _ in range(10):
        assert client.get(f"/api/sessions/{session_id}").status_code == 200
        assert client.post(f"/api/sessions/{session_id}/cancel").status_code == 202
        assert client.options("/api/sessions").status_code == 204
        assert client.get(f"/api/sessions/{session_id}/stream").status_code == 204
    new_session(client)
    assert_rate_limited(client.post("/api/sessions", json={}))


def test_no_owner_is_401_not_429() -> None:
    app = Flask("host")
    app.config.update(TESTING=True, CHATAPP_RATE_LIMIT="1/minute")
    ChatApp(app, owner=lambda: None)
    client = app.test_client()
    for _ in range(3):
        assert_error(client.post("/api/sessions", json={}), 401, "unauthenticated")


def test_the_host_owner_is_the_key() -> None:
    current = {"user": "alice"}
    app = Flask("host")
    app.config.update(TESTING=True, CHATAPP_RATE_LIMIT="2/minute")
    ChatApp(app, owner=lambda: current["user"])
    # Two browsers of one user share the user's budget.
    laptop, phone = app.test_client(), app.test_client()
    new_session(laptop)
    new_session(phone)
    assert_rate_limited(laptop.post("/api/sessions", json={}))
    current["user"] = "bob"
    new_session(laptop)


def test_host_routes_and_host_limiter_config_are_left_alone() -> None:
    app = Flask("host")
    # A host's own Flask-Limiter settings must not leak into chatapp's limiter.
    app.config.update(TESTING=True, SECRET_KEY="host secret", CHATAPP_RATE_LIMIT="2/minute", RATELIMIT_DEFAULT="1/minute", RATELIMIT_APPLICATION="1/minute")

    @app.post("/host/form")
    def host_form() -> str:
        return "host"

    ChatApp(app, url_prefix="/assistant")
    client = app.test_client()
    for _ in range(5):
        response = client.post("/host/form")
        assert response.status_code == 200 and response.data == b"host"
        assert "Retry-After" not in response.headers
    session_id = new_session_at(client, "/assistant")
    for _ in range(5):
        assert client.get(f"/assistant/api/sessions/{session_id}").status_code == 200
    new_session_at(client, "/assistant")
    assert_rate_limited(client.post("/assistant/api/sessions", json={}))


def new_session_at(client: FlaskClient, prefix: str) -> str:
    response = client.post(f"{prefix}/api/sessions", json={})
    assert response.status_code == 201, response.data
    return response.get_json()["session_id"]


@pytest.mark.parametrize("value", ["lots", "30 per fortnight", "", "30/minute; often"])
def test_bad_rate_limit_is_refused_at_start_up(value: str) -> None:
    with pytest.raises(ConfigError, match="CHATAPP_RATE_LIMIT"):
        create_app({"CHATAPP_RATE_LIMIT": value or " "})


def test_several_limits_in_one_setting() -> None:
    app = limited_app("2/minute; 100/hour")
    client = app.test_client()
    new_session(client)
    new_session(client)
    assert_rate_limited(client.post("/api/sessions", json={}))


@pytest.mark.parametrize(
    ("redis_url", "expected"),
    [
        (None, "memory://"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("rediss://user:pw@cache:6380", "rediss://user:pw@cache:6380"),
        ("unix:///run/redis.sock", "redis+unix:///run/redis.sock"),
    ],
)
def test_counts_are_kept_in_redis_when_there_is_one(redis_url: str | None, expected: str) -> None:
    assert storage_uri(Settings(redis_url=redis_url)) == expected


def test_rate_limit_through_a_real_server(start_server: ServerFactory) -> None:
    server = start_server({**FAST, "CHATAPP_RATE_LIMIT": "2/minute"})
    with server.client() as alice, server.client() as bob:
        alice.new_session()
        session_id = alice.new_session()
        refused = alice.post(f"/api/sessions/{session_id}/messages", json={"message": "over the limit"})
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/json"
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert alice.history(session_id)["messages"] == []
        bob.new_session()

