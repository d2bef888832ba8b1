"""Ownership: the owner cookie's flags, forged cookies, and another owner's sessions."""

from __future__ import annotations

import httpx
import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from chatapp import ChatApp, create_app
from tests.support.api import assert_error, new_session
from tests.support.servers import FAST, ServerFactory


def owner_cookie(response) -> str:
    cookies = [value for value in response.headers.getlist("Set-Cookie") if value.startswith("session=")]
    assert len(cookies) == 1, response.headers
    return cookies[0]


def flags(cookie: str) -> set[str]:
    return {part.strip().lower() for part in cookie.split(";")[1:]}


@pytest.mark.parametrize(
    ("config", "base_url", "headers", "secure"),
    [
        ({}, "http://localhost", {}, False),
        ({}, "https://localhost", {}, True),
        # A client cannot claim HTTPS for itself...
        ({}, "http://localhost", {"X-Forwarded-Proto": "https"}, False),
        # ...only a proxy the deployment declared can.
        ({"CHATAPP_TRUSTED_PROXIES": 1}, "http://localhost", {"X-Forwarded-Proto": "https"}, True),
        ({"CHATAPP_TRUSTED_PROXIES": 1}, "http://localhost", {}, False),
    ],
)
def test_standalone_owner_cookie_flags(config: dict, base_url: str, headers: dict, secure: bool) -> None:
    client = create_app({"TESTING": True, **config}).test_client()
    cookie = owner_cookie(client.post("/api/sessions", json={}, base_url=base_url, headers=headers))
    assert {"httponly", "samesite=lax"} <= flags(cookie)
    assert ("secure" in flags(cookie)) is secure


def test_samesite_none_is_always_secure() -> None:
    client = create_app({"TESTING": True, "CHATAPP_COOKIE_SAMESITE": "none"}).test_client()
    assert {"httponly", "samesite=none", "secure"} <= flags(owner_cookie(client.post("/api/sessions", json={})))


def test_embedded_the_hosts_cookie_settings_rule() -> None:
    app = Flask("host")
    app.config.update(TESTING=True, SECRET_KEY="host secret", SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=False)
    before = {key: value for key, value in app.config.items() if key.startswith("SESSION_COOKIE")}
    ChatApp(app)
    assert type(app.session_interface) is SecureCookieSessionInterface
    assert {key: value for key, value in app.config.items() if key.startswith("SESSION_COOKIE")} == before
    assert app.secret_key == "host secret"
    cookie = owner_cookie(app.test_client().post("/api/sessions", json={}, base_url="https://localhost"))
    assert "samesite=strict" in flags(cookie)
    assert "httponly" not in flags(cookie)


def test_a_forged_or_foreign_cookie_is_a_stranger() -> None:
    app = create_app({"TESTING": True, "SECRET_KEY": "ours"})
    alice = app.test_client()
    session_id = new_session(alice)
    genuine = alice.get_cookie("session").value
    claims = app.session_interface.get_signing_serializer(app).loads(genuine)
    assert claims["chatapp_owner"].startswith("anon:")

    # Alice's very owner id, signed with another key; her cookie with its signature
    # altered or cut off; and junk.
    elsewhere = create_app({"TESTING": True, "SECRET_KEY": "theirs"})
    payload, _, signature = genuine.rpartition(".")
    forgeries = [
        elsewhere.session_interface.get_signing_serializer(elsewhere).dumps(claims),
        f"{payload}.{signature[::-1]}",
        payload,
        "garbage",
    ]
    for forged in forgeries:
        forger = app.test_client()
        forger.set_cookie("session", forged)
        assert_error(forger.get(f"/api/sessions/{session_id}"), 404, "session_not_found")
    assert alice.get(f"/api/sessions/{session_id}").status_code == 200


def test_another_owner_gets_exactly_what_an_unknown_session_gets(start_server: ServerFactory) -> None:
    server = start_server(FAST)
    with server.client() as alice, server.client() as mallory:
        session_id = alice.new_session()
        alice.send_message(session_id, "private")
        unknown = "A" * 22
        for method, path, body in [
            ("GET", "", None),
            ("DELETE", "", None),
            ("POST", "/messages", {"message": "let me in"}),
            ("POST", "/cancel", None),
            ("GET", "/stream", None),
        ]:
            theirs = mallory.request(method, f"/api/sessions/{session_id}{path}", json=body)
            missing = mallory.request(method, f"/api/sessions/{unknown}{path}", json=body)
            assert (theirs.status_code, theirs.headers["content-type"], theirs.content) == (
                missing.status_code,
                missing.headers["content-type"],
                missing.content,
            )
            assert theirs.status_code == 404
        history = alice.history(session_id)
        assert [m["content"] for m in history["messages"]][:1] == ["private"]


def test_real_server_sets_a_safe_owner_cookie(start_server: ServerFactory) -> None:
    server = start_server(FAST)
    response = httpx.post(server.base_url + "/api/sessions", json={})
    assert response.status_code == 201
    cookie = response.headers["set-cookie"]
    assert {"httponly", "samesite=lax"} <= flags(cookie)
    assert "secure" not in flags(cookie)


@pytest.mark.parametrize("header", ["X-Forwarded-Proto: https", "X-Forwarded-Ssl: on", "X-Forwarded-Protocol: ssl"])
def test_forwarded_headers_from_an_untrusted_client_change_nothing(start_server: ServerFactory, header: str) -> None:
    # gunicorn itself believes these from 127.0.0.1 unless told otherwise; with
    # CHATAPP_TRUSTED_PROXIES=0 (the default) nobody is believed.
    server = start_server(FAST)
    name, _, value = header.partition(": ")
    spoofed = {name: value, "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "evil.example"}
    response = httpx.post(server.base_url + "/api/sessions", json={}, headers=spoofed)
    assert response.status_code == 201
    assert "secure" not in flags(response.headers["set-cookie"])
    # The URLs it answers with are this server's, not the claimed host's.
    assert response.headers["location"].startswith("/api/sessions/") or response.headers["location"].startswith(server.base_url)


def test_forwarded_headers_count_behind_trusted_proxies(start_server: ServerFactory) -> None:
    server = start_server({**FAST, "CHATAPP_TRUSTED_PROXIES": "1"})
    response = httpx.post(server.base_url + "/api/sessions", json={}, headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 201
    assert "secure" in flags(response.headers["set-cookie"])


def test_the_owner_is_asked_once_per_request_even_inside_one_app_context() -> None:
    calls = []
    current = {"user": "alice"}

    def owner() -> str:
        calls.append(current["user"])
        return current["user"]

    app = Flask("host")
    app.config.update(TESTING=True)
    ChatApp(app, owner=owner)
    client = app.test_client()
    with app.app_context():
        session_id = new_session(client)
        assert calls == ["alice"]
        current["user"] = "bob"
        # A second request in the same app context asks again: bob is not alice.
        assert_error(client.get(f"/api/sessions/{session_id}"), 404, "session_not_found")
    assert calls == ["alice", "bob"]
