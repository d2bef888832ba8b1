"""Stream tokens: the signed ``token`` of each ``stream_url`` opens that stream without a cookie.

Through real gunicorn servers (two workers on Redis, so a token one worker signed is
checked by another), clients without the owner's cookie; and a host whose users sign in
with bearer tokens only.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from flask import Flask
from itsdangerous import URLSafeTimedSerializer

from chatapp import ChatApp, create_app
from tests.support.apps.scripted import PREFIX
from tests.support.servers import FAST, ChatServer, ServerFactory
from tests.support.sseclient import EventStream, reply_text

STREAM = {"Accept": "text/event-stream"}
KEY = "stream token tests"


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(request: pytest.FixtureRequest, start_server: ServerFactory) -> ChatServer:
    env = {**FAST, "CHATAPP_SECRET_KEY": KEY}
    if request.param == "redis":
        env.update(CHATAPP_REDIS_URL=request.getfixturevalue("redis_server").url, WEB_CONCURRENCY="2")
    return start_server(env)


def token_of(url: str) -> str:
    [token] = parse_qs(urlsplit(url).query)["token"]
    return token


def finished_turn(client: httpx.Client) -> tuple[str, str]:
    """A session with one finished turn: its id and the stream_url the post returned."""
    session_id = client.post("/api/sessions", json={}).json()["session_id"]
    posted = client.post(f"/api/sessions/{session_id}/messages", json={"message": "tokens"}).json()
    with client.stream("GET", posted["stream_url"], headers=STREAM) as response:
        EventStream(response).until_end()
    return session_id, posted["stream_url"]


def test_a_stream_url_opens_the_stream_without_the_cookie(server: ChatServer) -> None:
    with server.client() as owner, httpx.Client(base_url=server.base_url, timeout=10) as stranger:
        session_id = owner.new_session()
        posted = owner.send_message(session_id, "no cookie needed")
        assert posted["stream_url"].startswith(f"/api/sessions/{session_id}/stream?token=")
        # The stranger has no cookie at all (an EventSource on another site, say).
        with stranger.stream("GET", posted["stream_url"], headers=STREAM) as response:
            assert response.status_code == 200
            events = EventStream(response).until_end()
            assert "set-cookie" not in response.headers
        assert [events[0].event, events[-1].event] == ["start", "end"]
        assert owner.history(session_id)["messages"][-1]["content"] == reply_text(events)
        # Resuming with the same URL and Last-Event-ID works too (what EventSource does).
        with stranger.stream("GET", posted["stream_url"], headers={**STREAM, "Last-Event-ID": events[2].id}) as response:
            assert [e.id for e in EventStream(response).until_end()] == [e.id for e in events[3:]]
        # Without the token, the stranger is just another owner.
        assert stranger.get(f"/api/sessions/{session_id}/stream").status_code == 404


def test_bad_tokens_get_the_404_of_an_unknown_session(server: ChatServer) -> None:
    with server.client() as owner, httpx.Client(base_url=server.base_url, timeout=10) as stranger:
        session_id, url = finished_turn(owner)
        other_id, other_url = finished_turn(owner)
        token = token_of(url)
        unknown = stranger.get("/api/sessions/AAAAAAAAAAAAAAAAAAAAAA/stream")
        assert unknown.status_code == 404
        payload, stamp, signature = token.split(".")
        flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
        foreign = URLSafeTimedSerializer("another key", salt="chatapp.stream-token").dumps(session_id)
        for bad_url in [
            f"/api/sessions/{session_id}/stream?token={payload}.{stamp}.{flipped}",
            f"/api/sessions/{session_id}/stream?token={token_of(other_url)}",
            f"/api/sessions/{other_id}/stream?token={token}",
            f"/api/sessions/{session_id}/stream?token={foreign}",
            f"/api/sessions/{session_id}/stream?token=",
            f"/api/sessions/{session_id}/stream?token=not.a.token",
            f"/api/sessions/AAAAAAAAAAAAAAAAAAAAAA/stream?token={token}",
            f"/api/sessions/not-a-session/stream?token={token}",
        ]:
            response = stranger.get(bad_url, headers=STREAM)
            # Indistinguishable from an unknown session: status, type and body.
            assert (response.status_code, response.headers["content-type"], response.json()) == (
                404,
                "application/json",
                unknown.json(),
            ), bad_url
        # The token opens the stream and nothing else.
        for method, path in [("GET", ""), ("DELETE", ""), ("POST", "/cancel")]:
            assert stranger.request(method, f"/api/sessions/{session_id}{path}?token={token}").status_code == 404
        assert stranger.get(url).status_code == 200


def test_an_expired_token_is_404_and_asking_again_renews_it(start_server: ServerFactory) -> None:
    server = start_server({**FAST, "CHATAPP_STREAM_TOKEN_SECONDS": "1"})
    with server.client() as owner, httpx.Client(base_url=server.base_url, timeout=10) as stranger:
        session_id, url = finished_turn(owner)
        assert stranger.get(url).status_code == 200
        # Signed with whole seconds: two seconds later it is over a second old.
        time.sleep(2.1)
        expired = stranger.get(url)
        assert expired.status_code == 404
        assert expired.json()["error"]["code"] == "session_not_found"
        # The history answers with a fresh stream_url.
        fresh = owner.get(f"/api/sessions/{session_id}").json()["stream_url"]
        assert token_of(fresh) != token_of(url)
        with stranger.stream("GET", fresh, headers=STREAM) as response:
            assert response.status_code == 200
            assert EventStream(response).until_end()[-1].event == "end"


def test_a_token_is_bound_to_the_sessions_owner() -> None:
    app = create_app({"TESTING": True, "CHATAPP_DEMO_DELAY_MS": 0})
    owner = app.test_client()
    session_id = owner.post("/api/sessions", json={}).get_json()["session_id"]
    tokens = app.extensions["chatapp"].tokens
    with app.app_context():
        forged = tokens.issue(session_id, "anon:somebody-else")
        genuine = tokens.issue(session_id, app.extensions["chatapp"].broker.owner_of(session_id))
    stranger = app.test_client()
    assert stranger.get(f"/api/sessions/{session_id}/stream?token={forged}").status_code == 404
    # No turn yet: the genuine token opens the stream, which has nothing to say.
    assert stranger.get(f"/api/sessions/{session_id}/stream?token={genuine}").status_code == 204


def test_no_token_when_tokens_are_off_or_there_is_no_key() -> None:
    off = create_app({"TESTING": True, "CHATAPP_STREAM_TOKEN_SECONDS": 0}).test_client()
    session_id = off.post("/api/sessions", json={}).get_json()["session_id"]
    assert off.get(f"/api/sessions/{session_id}").get_json()["stream_url"] == f"/api/sessions/{session_id}/stream"

    def keyless_host(**config: object) -> Flask:
        app = Flask("keyless")
        app.config.update(TESTING=True, **config)
        ChatApp(app, owner=lambda: "host-user")
        return app

    # A host with an owner callable needs no key; without one there is nothing to sign with.
    client = keyless_host().test_client()
    assert client.post("/api/sessions", json={}).get_json()["stream_url"].endswith("/stream")
    # CHATAPP_SECRET_KEY serves when the host has no key of its own.
    client = keyless_host(CHATAPP_SECRET_KEY="chatapp key").test_client()
    url = client.post("/api/sessions", json={}).get_json()["stream_url"]
    assert "?token=" in url
    assert client.get(url).status_code == 204
    assert client.get(url + "x").status_code == 404


@pytest.fixture(scope="module")
def bearer_host(start_server: ServerFactory) -> ChatServer:
    return start_server({"CHATAPP_RETRY_MS": "500"}, app="tests.support.apps.bearer:app", health_path=PREFIX + "/healthz")


def test_a_bearer_token_host_chats_without_any_cookie(bearer_host: ChatServer) -> None:
    api = bearer_host.base_url + PREFIX
    alice = httpx.Client(base_url=api, headers={"Authorization": "Bearer alice-token"}, timeout=10)
    bob = httpx.Client(base_url=api, headers={"Authorization": "Bearer bob-token"}, timeout=10)
    nobody = httpx.Client(base_url=api, timeout=10)
    with alice, bob, nobody:
        created = alice.post("/api/sessions", json={})
        assert created.status_code == 201
        session_id = created.json()["session_id"]
        posted = alice.post(f"/api/sessions/{session_id}/messages", json={"message": "hello"})
        assert posted.status_code == 202
        # The stream needs no Authorization header: its token stands for alice.
        with nobody.stream("GET", bearer_host.base_url + posted.json()["stream_url"], headers=STREAM) as response:
            assert response.status_code == 200
            events = EventStream(response).until_end()
        assert reply_text(events) == "You said: hello"
        assert nobody.get(f"/api/sessions/{session_id}").status_code == 401
        assert bob.get(f"/api/sessions/{session_id}").status_code == 404
        for client in (alice, bob, nobody):
            assert not client.cookies
