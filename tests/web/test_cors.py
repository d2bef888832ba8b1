"""CORS: only the listed origins, with credentials; `*` never with credentials."""

from __future__ import annotations

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from chatapp import ChatApp, create_app
from tests.support.api import new_session
from tests.support.servers import FAST, ServerFactory

ALLOWED = "https://chat.example"
OTHER = "https://evil.example"
CORS_HEADERS = {
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
}


def cors_client(origins: str) -> FlaskClient:
    return create_app({"TESTING": True, "CHATAPP_DEMO_DELAY_MS": 0, "CHATAPP_CORS_ORIGINS": origins}).test_client()


def cors_headers(response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items() if k.lower() in CORS_HEADERS}


def preflight(client: FlaskClient, path: str, origin: str, method: str = "POST", headers: str = "content-type"):
    return client.options(
        path,
        headers={"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers},
    )


def test_allowed_origin_gets_its_own_origin_and_credentials() -> None:
    client = cors_client(f"{ALLOWED}, http://localhost:3000")
    response = client.post("/api/sessions", json={}, headers={"Origin": ALLOWED})
    assert response.status_code == 201
    assert cors_headers(response) == {
        "access-control-allow-origin": ALLOWED,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "Location, Retry-After",
    }
    assert "Origin" in response.headers["Vary"]
    # Origins compare case-insensitively (schemes and hosts are).
    assert client.get("/api/openapi.json", headers={"Origin": ALLOWED.upper()}).headers["Access-Control-Allow-Origin"] == ALLOWED.upper()


def test_preflight_is_answered_for_an_allowed_origin() -> None:
    client = cors_client(ALLOWED)
    session_id = new_session(client)
    for path, method in [
        ("/api/sessions", "POST"),
        (f"/api/sessions/{session_id}/messages", "POST"),
        (f"/api/sessions/{session_id}", "DELETE"),
        (f"/api/sessions/{session_id}/stream", "GET"),
    ]:
        response = preflight(client, path, ALLOWED, method, "content-type, last-event-id")
        # No content, and an Allow that tells the path's own methods.
        assert response.status_code == 204
        assert method in response.headers["Allow"].split(", ")
        headers = cors_headers(response)
        assert headers["access-control-allow-origin"] == ALLOWED
        assert headers["access-control-allow-credentials"] == "true"
        assert method in headers["access-control-allow-methods"].split(", ")
        assert headers["access-control-allow-headers"] == "content-type, last-event-id"
        assert int(headers["access-control-max-age"]) > 0


def test_preflight_for_an_unused_method_or_header_is_not_approved() -> None:
    client = cors_client(ALLOWED)
    assert "access-control-allow-methods" not in cors_headers(preflight(client, "/api/sessions", ALLOWED, "PUT"))
    headers = cors_headers(preflight(client, "/api/sessions", ALLOWED, "POST", "content-type, x-custom"))
    assert headers["access-control-allow-headers"] == "content-type"


@pytest.mark.parametrize("origin", [OTHER, "https://chat.example.evil.example", "http://chat.example", "https://chat.example:444", "null"])
def test_other_origins_get_no_cors_headers(origin: str) -> None:
    client = cors_client(ALLOWED)
    assert cors_headers(client.post("/api/sessions", json={}, headers={"Origin": origin})) == {}
    assert cors_headers(preflight(client, "/api/sessions", origin)) == {}


def test_no_origins_configured_means_no_cors_headers_at_all() -> None:
    client = cors_client("")
    # A post from another origin is refused outright (the Origin check), with no CORS
    # headers; a read gets its answer without them, which the browser keeps from the page.
    response = client.post("/api/sessions", json={}, headers={"Origin": ALLOWED})
    assert response.status_code == 403
    assert cors_headers(response) == {}
    response = client.get("/api/openapi.json", headers={"Origin": ALLOWED})
    assert response.status_code == 200
    assert cors_headers(response) == {}
    assert cors_headers(preflight(client, "/api/sessions", ALLOWED)) == {}


def test_a_request_without_origin_gets_no_cors_headers() -> None:
    client = cors_client(ALLOWED)
    assert cors_headers(client.post("/api/sessions", json={})) == {}


def test_wildcard_never_comes_with_credentials() -> None:
    client = cors_client("*")
    for response in (
        client.post("/api/sessions", json={}, headers={"Origin": OTHER}),
        preflight(client, "/api/sessions", OTHER),
    ):
        headers = cors_headers(response)
        assert headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in headers


def test_listed_origins_keep_credentials_next_to_a_wildcard() -> None:
    client = cors_client(f"{ALLOWED},*")
    listed = cors_headers(client.post("/api/sessions", json={}, headers={"Origin": ALLOWED}))
    assert (listed["access-control-allow-origin"], listed["access-control-allow-credentials"]) == (ALLOWED, "true")
    anyone = cors_headers(client.post("/api/sessions", json={}, headers={"Origin": OTHER}))
    assert anyone["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in anyone


def test_ipv6_origin_is_matched_literally() -> None:
    client = cors_client("http://[::1]:3000")
    assert client.post("/api/sessions", json={}, headers={"Origin": "http://[::1]:3000"}).headers["Access-Control-Allow-Origin"] == "http://[::1]:3000"
    # Read as a regex, "[::1]" would be a character class matching ":" or "1".
    assert cors_headers(client.post("/api/sessions", json={}, headers={"Origin": "http://1:3000"})) == {}


def test_errors_carry_cors_headers_so_the_page_can_read_them() -> None:
    client = create_app({"TESTING": True, "CHATAPP_CORS_ORIGINS": ALLOWED, "CHATAPP_RATE_LIMIT": "1/minute"}).test_client()
    new_session(client)
    for response in (
        client.post("/api/sessions", json={}, headers={"Origin": ALLOWED}),
        client.get("/api/sessions/nope", headers={"Origin": ALLOWED}),
        client.get("/api/nothing", headers={"Origin": ALLOWED}),
    ):
        assert response.status_code in (404, 429)
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_host_routes_get_no_cors_headers() -> None:
    app = Flask("host")
    app.config.update(TESTING=True, SECRET_KEY="host secret", CHATAPP_CORS_ORIGINS=ALLOWED)

    @app.get("/api/users")
    def users() -> dict:
        return {"users": []}

    @app.errorhandler(404)
    def host_404(exc: Exception) -> tuple[str, int]:
        return "host page not found", 404

    ChatApp(app)
    client = app.test_client()
    assert new_session(client)
    for response in (
        client.get("/api/users", headers={"Origin": ALLOWED}),
        preflight(client, "/api/users", ALLOWED, "GET"),
        client.get("/elsewhere", headers={"Origin": ALLOWED}),
    ):
        assert cors_headers(response) == {}
        assert "Origin" not in response.headers.get("Vary", "")
    assert client.get("/elsewhere").data == b"host page not found"
    assert client.post("/api/sessions", json={}, headers={"Origin": ALLOWED}).headers["Access-Control-Allow-Origin"] == ALLOWED


def test_stream_through_a_real_server_carries_the_exact_headers(start_server: ServerFactory) -> None:
    """What a browser's ``EventSource(url, {withCredentials: true})`` needs, cross-origin."""
    server = start_server({**FAST, "CHATAPP_CORS_ORIGINS": f"{ALLOWED},http://localhost:3000"})
    with server.client() as client:
        origin = {"Origin": ALLOWED}
        created = client.post("/api/sessions", json={}, headers=origin)
        assert created.headers["access-control-allow-origin"] == ALLOWED
        session_id = created.json()["session_id"]
        ask = httpx.options(
            f"{server.base_url}/api/sessions/{session_id}/messages",
            headers={**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
        )
        assert ask.status_code == 204
        assert (ask.headers["access-control-allow-origin"], ask.headers["access-control-allow-credentials"]) == (ALLOWED, "true")
        client.post(f"/api/sessions/{session_id}/messages", json={"message": "from afar"}, headers=origin).raise_for_status()
        with client.stream("GET", f"/api/sessions/{session_id}/stream", headers={**origin, "Accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert stream.headers.get_list("access-control-allow-origin") == [ALLOWED]
            assert stream.headers.get_list("access-control-allow-credentials") == ["true"]
            assert "Origin" in stream.headers["vary"]
            body = b"".join(stream.iter_raw())
        assert b"event: end" in body
        with client.stream("GET", f"/api/sessions/{session_id}/stream", headers={"Origin": OTHER}) as stream:
            assert "access-control-allow-origin" not in stream.headers
            assert "access-control-allow-credentials" not in stream.headers
