"""The Origin check on every state-changing request, request by request (the browser's
side of it is in test_browser_cors.py)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from chatapp import create_app
from tests.support.api import assert_error, new_session

LISTED = "https://app.example"


@pytest.fixture
def client() -> FlaskClient:
    app = create_app({"TESTING": True, "CHATAPP_CORS_ORIGINS": LISTED, "CHATAPP_DEMO_DELAY_MS": 0})
    return app.test_client()


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://localhost:8001"},  # another port: same site, another origin
        {"Origin": "http://evil.example"},
        {"Origin": "null"},  # a sandboxed frame, a file, a redirect across origins
        {"Origin": "http://localhost/path"},
        {"Origin": "http://localhost:notaport"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_state_changes_from_another_origin_are_refused(client: FlaskClient, headers: dict[str, str]) -> None:
    session_id = new_session(client)
    for response in (
        client.post("/api/sessions", json={}, headers=headers),
        client.post(f"/api/sessions/{session_id}/messages", json={"message": "hi"}, headers=headers),
        client.post(f"/api/sessions/{session_id}/cancel", headers=headers),
        client.delete(f"/api/sessions/{session_id}", headers=headers),
    ):
        assert_error(response, 403, "cross_origin_refused")
    # Nothing happened, and reading is not a state change.
    assert client.get(f"/api/sessions/{session_id}", headers=headers).get_json()["messages"] == []


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no browser page at all: curl, the CLI, a server
        {"Origin": "http://localhost"},  # the app's own origin (the test client's host)
        {"Origin": "HTTP://LOCALHOST:80"},
        {"Origin": "https://localhost"},  # behind a TLS proxy not trusted for X-Forwarded-Proto
        {"Origin": LISTED},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
    ],
)
def test_the_app_itself_listed_origins_and_non_browsers_may(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.post("/api/sessions", json={}, headers=headers)
    assert response.status_code == 201, response.data
    session_id = response.get_json()["session_id"]
    assert client.post(f"/api/sessions/{session_id}/messages", json={"message": "hi"}, headers=headers).status_code == 202
    assert client.post(f"/api/sessions/{session_id}/cancel", headers=headers).status_code == 202
    assert client.delete(f"/api/sessions/{session_id}", headers=headers).status_code == 204


def test_another_port_of_the_app_host_is_another_origin() -> None:
    client = create_app({"TESTING": True}).test_client()
    own = client.post("/api/sessions", json={}, base_url="http://127.0.0.1:8000", headers={"Origin": "http://127.0.0.1:8000"})
    assert own.status_code == 201
    other = client.post("/api/sessions", json={}, base_url="http://127.0.0.1:8000", headers={"Origin": "http://127.0.0.1:8001"})
    assert_error(other, 403, "cross_origin_refused")


def test_creating_a_session_needs_json_like_every_other_post(client: FlaskClient) -> None:
    assert_error(client.post("/api/sessions"), 415, "unsupported_media_type")
    assert_error(client.post("/api/sessions", data="{}", content_type="text/plain"), 415, "unsupported_media_type")
    assert_error(client.post("/api/sessions", data="[1]", content_type="application/json"), 400, "invalid_json")
    assert client.post("/api/sessions", data="", content_type="application/json").status_code == 201
    assert client.post("/api/sessions", json={}).status_code == 201


def test_a_refused_request_spends_no_rate_limit() -> None:
    app = create_app({"TESTING": True, "CHATAPP_RATE_LIMIT": "2/minute"})
    client = app.test_client()
    for _ in range(5):
        assert_error(client.post("/api/sessions", json={}, headers={"Origin": "http://localhost:9"}), 403, "cross_origin_refused")
    new_session(client)
    new_session(client)
