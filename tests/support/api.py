"""Helpers for the JSON API through Flask's test client."""

from __future__ import annotations

import time

from flask.testing import FlaskClient


def new_session(client: FlaskClient) -> str:
    response = client.post("/api/sessions", json={})
    assert response.status_code == 201
    return response.get_json()["session_id"]


def wait_idle(client: FlaskClient, session_id: str) -> dict:
    deadline = time.monotonic() + 10
    while True:
        body = client.get(f"/api/sessions/{session_id}").get_json()
        if not body["generating"] or time.monotonic() > deadline:
            return body
        time.sleep(0.01)


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
