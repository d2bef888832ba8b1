"""Scale-out on Redis: several gunicorn servers with several workers, one conversation."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import httpx
import pytest

from chatapp.broker.base import parse_event_id
from tests.support.redis_server import RedisServer
from tests.support.servers import ChatClient, ChatServer, ServerFactory, wait_for
from tests.support.sseclient import Received, reply_text

SECRET = "test-secret-shared-by-every-worker-and-host"


def redis_env(url: str, **extra: str) -> dict[str, str]:
    return {"CHATAPP_REDIS_URL": url, "CHATAPP_SECRET_KEY": SECRET, "WEB_CONCURRENCY": "2", **extra}


def client_for(server: ChatServer, like: ChatClient) -> ChatClient:
    """A client of ``server`` that is the same owner as ``like`` (same signed cookie)."""
    other = server.client()
    # Share the jar itself: assigning Client.cookies would copy it as it is now.
    other.cookies.jar = like.cookies.jar
    return other


@pytest.fixture(scope="module")
def pair(start_server: ServerFactory, redis_server: RedisServer) -> tuple[ChatServer, ChatServer]:
    env = redis_env(redis_server.url, CHATAPP_DEMO_DELAY_MS="20", CHATAPP_DEMO_REPLY_WORDS="40")
    first, second = start_server(env), start_server(env)
    assert len(first.worker_pids()) == 2 and len(second.worker_pids()) == 2
    return first, second


def test_one_conversation_across_two_servers(pair: tuple[ChatServer, ChatServer]) -> None:
    first, second = pair
    with first.client() as on_first, client_for(second, on_first) as on_second:
        session_id = on_first.new_session()
        posted = on_first.send_message(session_id, "across hosts")
        seen: list[Received] = []
        with on_second.open_stream(session_id) as stream:
            for event in stream.events():
                seen.append(event)
                if len(seen) == 6:
                    break
        # Resume mid-turn on the other server with Last-Event-ID.
        with on_first.open_stream(session_id, last_event_id=seen[-1].id) as stream:
            rest = stream.until_end()
        events = seen + rest
        ids = [e.id for e in events]
        assert len(ids) == len(set(ids))
        assert [parse_event_id(i) for i in ids] == sorted(parse_event_id(i) for i in ids)
        assert [e.event for e in events][0] == "start" and events[-1].event == "end"
        assert events[-1].json()["finish_reason"] == "stop"
        assert len(events) == 42
        history = on_second.history(session_id)
        assert history["messages"][-1] == {"id": posted["message_id"], "role": "assistant", "content": reply_text(events)}
        # Every worker of both servers serves the session (new connections spread over them).
        for client in (on_first, on_second):
            for _ in range(6):
                with httpx.Client(base_url=str(client.base_url), cookies=client.cookies) as fresh:
                    assert fresh.get(f"/api/sessions/{session_id}").status_code == 200
        with on_second.open_stream(session_id, last_event_id=events[-1].id) as stream:
            assert stream.status_code == 204


def test_a_post_on_two_hosts_at_once_admits_one(pair: tuple[ChatServer, ChatServer]) -> None:
    first, second = pair
    with first.client() as on_first, client_for(second, on_first) as on_second:
        session_id = on_first.new_session()
        statuses: list[int] = []
        barrier = threading.Barrier(2)

        def post(client: ChatClient) -> None:
            barrier.wait()
            statuses.append(client.post(f"/api/sessions/{session_id}/messages", json={"message": "race"}).status_code)

        threads = [threading.Thread(target=post, args=(c,)) for c in (on_first, on_second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(statuses) == [202, 409]
        with on_first.open_stream(session_id) as stream:
            assert stream.until_end()[-1].json()["finish_reason"] == "stop"


def test_cancel_from_the_other_host(pair: tuple[ChatServer, ChatServer], start_server: ServerFactory, redis_server: RedisServer) -> None:
    first, _ = pair
    slow = start_server(redis_env(redis_server.url, CHATAPP_DEMO_DELAY_MS="400", CHATAPP_DEMO_REPLY_WORDS="100"))
    with slow.client() as producer_side, client_for(first, producer_side) as other:
        session_id = producer_side.new_session()
        producer_side.send_message(session_id, "stop me elsewhere")
        with other.open_stream(session_id, read_timeout=10) as stream:
            events = []
            for event in stream.events():
                events.append(event)
                if len(events) == 3:
                    assert other.post(f"/api/sessions/{session_id}/cancel").json() == {"cancelled": True}
                if event.event == "end":
                    break
        assert events[-1].json()["finish_reason"] == "cancelled"
        assert len(events) < 100
        assert other.history(session_id)["messages"][-1]["content"] == reply_text(events)


def test_with_continue_off_a_killed_producer_ends_the_turn_for_readers_elsewhere(start_server: ServerFactory, tmp_path: Path) -> None:
    # A Redis of its own: servers of other tests, which would take the turn over, share
    # the module's.
    own = RedisServer(tmp_path)
    try:
        _killed_producer_ends_the_turn(start_server, own)
    finally:
        own.stop()


def _killed_producer_ends_the_turn(start_server: ServerFactory, redis_server: RedisServer) -> None:
    env = redis_env(redis_server.url, CHATAPP_DEMO_DELAY_MS="300", CHATAPP_DEMO_REPLY_WORDS="200", CHATAPP_HEARTBEAT_SECONDS="1", CHATAPP_CONTINUE="off")
    doomed, survivor = start_server(env), start_server(env)
    with doomed.client() as on_doomed, client_for(survivor, on_doomed) as on_survivor:
        session_id = on_doomed.new_session()
        on_doomed.send_message(session_id, "about to die")
        results: dict[int, list[Received]] = {}
        started = [threading.Event(), threading.Event()]

        def read(n: int) -> None:
            # The read timeout is a hang guard: liveness is 3 s, checks follow within 3 s.
            with client_for(survivor, on_doomed) as client, client.open_stream(session_id, read_timeout=20) as stream:
                events = []
                for event in stream.events():
                    events.append(event)
                    if event.event == "token":
                        started[n].set()
                    if event.event == "end":
                        break
                results[n] = events

        readers = [threading.Thread(target=read, args=(n,)) for n in range(2)]
        for reader in readers:
            reader.start()
        assert all(flag.wait(15) for flag in started)
        for pid in doomed.worker_pids():
            os.kill(pid, signal.SIGKILL)
        for reader in readers:
            reader.join(30)
        for n in range(2):
            names = [e.event for e in results[n]]
            assert names[-2:] == ["error", "end"], names
            assert results[n][-2].json() == {"code": "generation_interrupted", "message": "The reply was interrupted; please try again.", "retryable": True}
            assert results[n][-1].json()["finish_reason"] == "error"
        # Appended once, though two readers (maybe on two workers) noticed.
        assert [e.id for e in results[0]] == [e.id for e in results[1]]
        history = on_survivor.history(session_id)
        assert history["generating"] is False
        # The tokens sent before the kill stay in history as the partial reply.
        assert reply_text(results[0])
        assert history["messages"][-1]["content"] == reply_text(results[0])
        # The session takes the next message.
        on_survivor.send_message(session_id, "again")


def test_redis_down_is_503_and_service_comes_back(start_server: ServerFactory, tmp_path: Path) -> None:
    own = RedisServer(tmp_path)
    try:
        server = start_server(redis_env(own.url, CHATAPP_DEMO_DELAY_MS="1", CHATAPP_DEMO_REPLY_WORDS="5"))
        with server.client() as client:
            session_id = client.new_session()
            own.stop()
            health = httpx.get(server.base_url + "/healthz", timeout=10)
            assert health.status_code == 503
            assert health.json()["broker"] == {"backend": "redis", "ok": False}
            for response in (
                client.post("/api/sessions", json={}),
                client.get(f"/api/sessions/{session_id}"),
                client.post(f"/api/sessions/{session_id}/messages", json={"message": "hi"}),
                client.get(f"/api/sessions/{session_id}/stream"),
            ):
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "broker_unavailable"
                assert "redis://" not in response.text
            own.start()
            assert wait_for(lambda: httpx.get(server.base_url + "/healthz", timeout=10).status_code == 200)
            # Memory is gone with that Redis (it kept nothing on disk); the service is back.
            fresh = client.new_session()
            client.send_message(fresh, "back")
            with client.open_stream(fresh) as stream:
                assert stream.until_end()[-1].json()["finish_reason"] == "stop"
    finally:
        own.stop()


def test_a_reply_cached_on_one_host_is_a_hit_on_the_other(pair: tuple[ChatServer, ChatServer]) -> None:
    first, second = pair
    starts = []
    # One owner on both hosts: the cache is scoped per owner.
    with first.client() as on_first, client_for(second, on_first) as on_second:
        for client in (on_first, on_second):
            session_id = client.new_session()
            client.send_message(session_id, "the same question on two hosts")
            with client.open_stream(session_id) as stream:
                events = stream.until_end()
            starts.append((events[0].json()["cached"], reply_text(events)))
    assert starts[0][0] is False and starts[1][0] is True
    assert starts[0][1] == starts[1][1]


def test_a_rate_limit_holds_across_servers_together(start_server: ServerFactory, redis_server: RedisServer) -> None:
    env = redis_env(redis_server.url, CHATAPP_RATE_LIMIT="5/minute")
    first, second = start_server(env), start_server(env)
    with first.client() as on_first, client_for(second, on_first) as on_second:
        clients = [on_first, on_second]
        statuses = [clients[n % 2].post("/api/sessions", json={}).status_code for n in range(5)]
        assert statuses == [201] * 5
        for client in clients:
            refused = client.post("/api/sessions", json={})
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "rate_limited"
            assert 0 < int(refused.headers["Retry-After"]) <= 60
    # Another owner has a budget of its own.
    with second.client() as stranger:
        assert stranger.post("/api/sessions", json={}).status_code == 201


def test_the_stream_cap_holds_across_servers_together(start_server: ServerFactory, redis_server: RedisServer) -> None:
    env = redis_env(redis_server.url, CHATAPP_MAX_STREAMS_PER_OWNER="2", CHATAPP_HEARTBEAT_SECONDS="1")
    first, second = start_server(env), start_server(env)
    with first.client() as on_first, client_for(second, on_first) as on_second:
        session_id = on_first.new_session()
        with on_first.open_stream(session_id, params={"follow": "1"}) as one, on_second.open_stream(session_id, params={"follow": "1"}) as two:
            assert (one.status_code, two.status_code) == (200, 200)
            for client in (on_first, on_second):
                refused = client.get(f"/api/sessions/{session_id}/stream", params={"follow": "1"})
                assert refused.status_code == 429
                assert refused.json()["error"]["code"] == "too_many_streams"
        # Both left: their slots are free again (the server notices at its next write).
        def reopened() -> bool:
            with on_second.open_stream(session_id, params={"follow": "1"}) as again:
                return again.status_code == 200

        assert wait_for(reopened, timeout=20)
