"""The one-step stream: a message post that answers with its turn's stream, on a real server.

``POST .../messages`` and ``POST /api/chat`` with ``Accept: text/event-stream``, read by
the reference client, by ``curl -N`` and by httpx-sse; a dropped one resumed with
``GET .../stream``; on the memory broker and on a real Redis.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import httpx
import pytest
from httpx_sse import connect_sse

from chatapp.tools.client import ChatAPI
from tests.support.servers import FAST, ChatServer, ServerFactory
from tests.support.sseclient import EventStream, Received, reply_text

STREAM = {"Accept": "text/event-stream"}


@pytest.fixture(scope="module", params=["memory", "redis"])
def broker_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "memory":
        return {}
    redis_server = request.getfixturevalue("redis_server")
    return {"CHATAPP_REDIS_URL": redis_server.url, "WEB_CONCURRENCY": "2", "CHATAPP_SECRET_KEY": "one-step tests"}


@pytest.fixture(scope="module")
def server(start_server: ServerFactory, broker_env: dict[str, str]) -> ChatServer:
    return start_server({**FAST, **broker_env})


@pytest.fixture(scope="module")
def steady_server(start_server: ServerFactory, broker_env: dict[str, str]) -> ChatServer:
    """Replies long and slow enough to drop a reader in the middle of them."""
    return start_server({"CHATAPP_DEMO_DELAY_MS": "15", "CHATAPP_DEMO_REPLY_WORDS": "40", **broker_env})


def replay(client: httpx.Client, session_id: str) -> list[Received]:
    """The session's latest turn as GET .../stream gives it, from its start."""
    with client.stream("GET", f"/api/sessions/{session_id}/stream", headers=STREAM) as response:
        assert response.status_code == 200
        return EventStream(response).until_end()


def pairs(events: list[Received]) -> list[tuple[str, str, str]]:
    return [(e.id, e.event, e.data) for e in events]


def test_a_message_post_answers_with_its_turns_stream(server: ChatServer) -> None:
    with server.client() as client:
        session_id = client.new_session()
        with client.stream("POST", f"/api/sessions/{session_id}/messages", json={"message": "in one step"}, headers=STREAM) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            stream = EventStream(response)
            # read_rest returns only when the server closes the response after `end`.
            events = [item for item in stream.read_rest() if item.kind == "event"]
        # `retry` first, inside the block of `start`: no frame without data.
        assert stream.raw.startswith(b"retry: 3000\nevent: start\nid: ")
        assert stream.parser.retry == 3000
        assert [events[0].event, events[-1].event] == ["start", "end"]
        assert {e.event for e in events[1:-1]} == {"token"}
        assert set(events[0].json()) == {"message_id", "model", "cached"}
        assert events[-1].json()["finish_reason"] == "stop"
        # The very events and ids the GET stream gives.
        assert pairs(replay(client, session_id)) == pairs(events)
        history = client.history(session_id)
        assert history["messages"][-1] == {"id": events[0].json()["message_id"], "role": "assistant", "content": reply_text(events)}


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/json, text/event-stream", "text/html"])
def test_without_a_preference_for_the_stream_the_post_answers_202(server: ChatServer, accept: str | None) -> None:
    with server.client() as client:
        session_id = client.new_session()
        headers = {} if accept is None else {"Accept": accept}
        if accept is None:
            client.headers.pop("Accept", None)
        response = client.post(f"/api/sessions/{session_id}/messages", json={"message": "hi"}, headers=headers)
        assert response.status_code == 202, response.text
        assert response.headers["content-type"] == "application/json"
        assert set(response.json()) == {"message_id", "stream_url"}


@pytest.mark.parametrize("drop_after", [1, 2, 9, 30])
def test_a_dropped_one_step_stream_resumes_with_the_get_stream(steady_server: ChatServer, drop_after: int) -> None:
    with steady_server.client() as client:
        session_id = client.new_session()
        seen: list[Received] = []
        with client.stream(
            "POST", f"/api/sessions/{session_id}/messages", json={"message": f"drop after {drop_after}"}, headers=STREAM
        ) as response:
            for event in EventStream(response).events():
                seen.append(event)
                if len(seen) == drop_after:
                    break
        # Leaving the block closed the connection mid-reply; the reply goes on.
        assert seen[-1].event != "end"
        with client.open_stream(session_id, last_event_id=seen[-1].id) as resumed:
            assert resumed.status_code == 200
            rest = resumed.until_end()
        whole = replay(client, session_id)
        # Exactly the missing events: nothing lost, nothing twice.
        assert pairs(seen) + pairs(rest) == pairs(whole)
        assert whole[-1].json()["finish_reason"] == "stop"


def test_api_chat_creates_the_session_and_names_it_in_start(server: ChatServer) -> None:
    with server.client() as client:
        with client.stream("POST", "/api/chat", json={"message": "one shot"}, headers=STREAM) as response:
            assert response.status_code == 200
            events = EventStream(response).until_end()
        start = events[0].json()
        session_id = start["session_id"]
        assert set(start) == {"session_id", "message_id", "model", "cached"}
        assert events[-1].json()["finish_reason"] == "stop"
        # The caller (its cookie) owns the new session, and the stream is its turn.
        history = client.history(session_id)
        assert [m["content"] for m in history["messages"]] == ["one shot", reply_text(events)]
        assert pairs(replay(client, session_id)) == pairs(events)

        # Naming the session goes on in it; the client knows the id, so start does not repeat it.
        with client.stream("POST", "/api/chat", json={"message": "again", "session_id": session_id}, headers=STREAM) as response:
            assert response.status_code == 200
            again = EventStream(response).until_end()
        assert "session_id" not in again[0].json()
        assert [m["role"] for m in client.history(session_id)["messages"]] == ["user", "assistant"] * 2


def test_api_chat_without_the_stream_answers_202_with_the_sessions_urls(server: ChatServer) -> None:
    with server.client() as client:
        response = client.post("/api/chat", json={"message": "later"})
        assert response.status_code == 202
        body = response.json()
        assert set(body) == {"session_id", "message_id", "stream_url", "messages_url"}
        with client.stream("GET", body["stream_url"], headers=STREAM) as stream_response:
            events = EventStream(stream_response).until_end()
        assert events[0].json() == {"session_id": body["session_id"], "message_id": body["message_id"], "model": "demo", "cached": False}
        assert body["messages_url"] == f"/api/sessions/{body['session_id']}/messages"


def test_api_chat_refuses_another_owners_session_and_bad_input(server: ChatServer) -> None:
    with server.client() as alice, server.client() as mallory:
        alices = alice.new_session()
        for body, status, code in [
            ({"message": "mine now", "session_id": alices}, 404, "session_not_found"),
            ({"message": "x", "session_id": "not-a-session"}, 404, "session_not_found"),
            ({"message": "x", "session_id": 7}, 400, "invalid_request"),
            ({"message": "   "}, 400, "invalid_request"),
            ({"session_id": alices}, 400, "invalid_request"),
        ]:
            for headers in (STREAM, {}):
                response = mallory.post("/api/chat", json=body, headers=headers)
                assert response.status_code == status, (body, response.text)
                assert response.headers["content-type"] == "application/json"
                assert response.json()["error"]["code"] == code
        assert mallory.post("/api/chat", content=b"message=hi", headers={**STREAM, "Content-Type": "application/x-www-form-urlencoded"}).status_code == 415
        # Nothing reached alice's session.
        assert alice.history(alices)["messages"] == []


def test_a_one_step_post_during_a_turn_is_409_json(steady_server: ChatServer) -> None:
    with steady_server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "first")
        response = client.post(f"/api/sessions/{session_id}/messages", json={"message": "second"}, headers=STREAM)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "generation_in_progress"


def test_too_many_streams_refuses_before_the_turn_starts(start_server: ServerFactory) -> None:
    server = start_server(
        {"CHATAPP_DEMO_DELAY_MS": "30", "CHATAPP_DEMO_REPLY_WORDS": "60", "CHATAPP_MAX_STREAMS_PER_OWNER": "1", "CHATAPP_MAX_SESSIONS_PER_OWNER": "3"}
    )
    with server.client() as client:
        first, second = client.new_session(), client.new_session()
        with client.stream("POST", f"/api/sessions/{first}/messages", json={"message": "holds the slot"}, headers=STREAM) as held:
            assert held.status_code == 200
            refused = client.post(f"/api/sessions/{second}/messages", json={"message": "no slot"}, headers=STREAM)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too_many_streams"
            assert int(refused.headers["retry-after"]) >= 1
            # The session /api/chat made for a refused request is not left behind.
            refused = client.post("/api/chat", json={"message": "no slot either"}, headers=STREAM)
            assert refused.status_code == 429
        # Refused before it began: the second session holds no message.
        assert client.history(second)["messages"] == []
        # Three sessions at most: the two, and room for one more.
        assert client.post("/api/sessions", json={}).status_code == 201
        assert client.post("/api/sessions", json={}).json()["error"]["code"] == "too_many_sessions"


def test_the_reference_client_streams_a_turn_in_one_request(server: ChatServer) -> None:
    with ChatAPI(server.base_url) as api:
        with api.chat("first words") as reader:
            events = [item for item in reader.items() if item.kind == "event"]
        session_id = events[0].json()["session_id"]
        with api.chat("second words", session_id=session_id) as reader:
            second = [item for item in reader.items() if item.kind == "event"]
        assert [e.event for e in (events[0], events[-1], second[0], second[-1])] == ["start", "end", "start", "end"]
        history = api.http.get(api.url(f"/api/sessions/{session_id}")).json()
        assert [m["content"] for m in history["messages"]][::2] == ["first words", "second words"]
        with pytest.raises(Exception, match="session_not_found"):
            with api.chat("nowhere", session_id="A" * 22):
                pass


# Under CI nothing is skipped: a missing curl fails (scripts/test installs it).
@pytest.mark.skipif(shutil.which("curl") is None and os.environ.get("CI") != "true", reason="curl is not installed")
def test_curl_streams_a_turn_in_one_request(server: ChatServer, tmp_path) -> None:
    jar = str(tmp_path / "jar")
    command = [
        "curl", "-sN", "-c", jar, "-b", jar,
        "-H", "Accept: text/event-stream", "-H", "Content-Type: application/json",
        "-d", '{"message":"hi"}', f"{server.base_url}/api/chat",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, timeout=30, check=True)
    assert result.stdout.startswith(b"retry: 3000\nevent: start\n")
    blocks = result.stdout.decode().split("\n\n")
    data = [json.loads(line[len("data: ") :]) for block in blocks for line in block.split("\n") if line.startswith("data: ")]
    assert data[-1]["finish_reason"] == "stop"
    # The cookie jar is the owner: the same curl reads the history of the new session.
    history = subprocess.run(["curl", "-s", "-b", jar, f"{server.base_url}/api/sessions/{data[0]['session_id']}"], capture_output=True, timeout=30, check=True)
    assert json.loads(history.stdout)["messages"][0]["content"] == "hi"


def test_httpx_sse_reads_every_event_as_json(server: ChatServer) -> None:
    """httpx-sse hands every block with a field to the application: each must be an event."""
    with server.client() as client:
        session_id = client.new_session()
        with connect_sse(client, "POST", f"/api/sessions/{session_id}/messages", json={"message": "naive"}) as source:
            one_step = [(sse.event, json.loads(sse.data), sse.retry) for sse in source.iter_sse()]
        with connect_sse(client, "GET", f"/api/sessions/{session_id}/stream") as source:
            get = [(sse.event, json.loads(sse.data), sse.retry) for sse in source.iter_sse()]
    assert one_step == get
    assert one_step[0][0] == "start" and one_step[0][2] == 3000
    assert one_step[-1][0] == "end"


def test_a_204_has_no_content_type(server: ChatServer) -> None:
    with server.client() as client:
        session_id = client.new_session()
        with client.open_stream(session_id) as stream:
            assert stream.status_code == 204
            assert "content-type" not in stream.headers
        deleted = client.delete(f"/api/sessions/{session_id}")
        assert deleted.status_code == 204
        assert "content-type" not in deleted.headers


def test_the_owner_cookie_is_sent_only_when_it_changes(server: ChatServer) -> None:
    with server.client() as client:
        created = client.post("/api/sessions", json={})
        assert "set-cookie" in created.headers
        session_id = created.json()["session_id"]
        with client.stream("POST", f"/api/sessions/{session_id}/messages", json={"message": "hi"}, headers=STREAM) as response:
            assert response.status_code == 200
            assert "set-cookie" not in response.headers
            EventStream(response).read_rest()
        for response in (client.get(f"/api/sessions/{session_id}"), client.post("/api/sessions", json={})):
            assert response.status_code in (200, 201)
            assert "set-cookie" not in response.headers


@pytest.fixture(scope="module", params=["gthread", "flask", "uwsgi"])
def classic_server(request: pytest.FixtureRequest, start_server: ServerFactory) -> ChatServer:
    """Classic WSGI hosting: gunicorn's threaded worker, ``flask run`` and uWSGI with gevent."""
    return start_server({"CHATAPP_DEMO_DELAY_MS": "300", "CHATAPP_DEMO_REPLY_WORDS": "3"}, kind=request.param)


def test_one_step_streams_under_classic_servers(classic_server: ChatServer) -> None:
    with classic_server.client() as client:
        with client.stream("POST", "/api/chat", json={"message": "threads"}, headers=STREAM) as response:
            assert response.status_code == 200
            stream = EventStream(response)
            events = [item for item in stream.read_rest() if item.kind == "event"]
        assert stream.raw.startswith(b"retry: 3000\nevent: start\n")
        assert [e.event for e in events] == ["start", "token", "token", "token", "end"]
        # Arrival spread over time shows nothing buffered the body until the end.
        assert events[-1].at > events[1].at
        history = client.history(events[0].json()["session_id"])
        assert history["messages"][-1]["content"] == reply_text(events)
