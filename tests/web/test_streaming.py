"""The stream, end to end: a real gunicorn+gevent server on loopback, a real SSE client."""

from __future__ import annotations

import threading

import pytest

from chatapp.broker.base import parse_event_id
from tests.support.servers import FAST, ChatServer, ServerFactory, wait_for
from tests.support.sseclient import Received, reply_text


@pytest.fixture(scope="module", params=["memory", "redis"])
def broker_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Every stream test runs on the memory broker and on a real Redis."""
    if request.param == "memory":
        return {}
    redis_server = request.getfixturevalue("redis_server")
    # One worker: /healthz counts the streams of the worker that answers it.
    return {"CHATAPP_REDIS_URL": redis_server.url, "WEB_CONCURRENCY": "1"}


@pytest.fixture(scope="module")
def server(start_server: ServerFactory, broker_env: dict[str, str]) -> ChatServer:
    return start_server({**FAST, **broker_env})


@pytest.fixture(scope="module")
def slow_server(start_server: ServerFactory, broker_env: dict[str, str]) -> ChatServer:
    """Slow replies with quiet gaps longer than the heartbeat."""
    return start_server({"CHATAPP_DEMO_DELAY_MS": "1500", "CHATAPP_DEMO_REPLY_WORDS": "40", "CHATAPP_HEARTBEAT_SECONDS": "0.4", **broker_env})


def test_full_turn_then_204(server: ChatServer) -> None:
    with server.client() as client:
        session_id = client.new_session()
        posted = client.send_message(session_id, "hello there")
        with client.open_stream(session_id) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert stream.headers["cache-control"] == "no-cache"
            assert stream.headers["x-accel-buffering"] == "no"
            assert "content-encoding" not in stream.headers
            # read_rest returns only when the server closes the response after `end`.
            items = stream.read_rest()
        # `retry` rides in the first event's block: a frame of its own would reach
        # httpx-sse and hand-written readers as an event with empty data.
        assert stream.raw.startswith(b"retry: 3000\nevent: start\nid: ")
        events = [i for i in items if i.kind == "event"]
        names = [e.event for e in events]
        assert names[0] == "start" and names[-1] == "end"
        assert set(names[1:-1]) == {"token"} and len(names) >= 3
        assert events[0].json() == {"message_id": posted["message_id"], "model": "demo", "cached": False}
        end = events[-1].json()
        assert end["message_id"] == posted["message_id"]
        assert end["finish_reason"] == "stop"
        assert end["usage"]["completion_tokens"] == len(names) - 2
        ids = [parse_event_id(e.id) for e in events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)

        history = client.history(session_id)
        assert history["generating"] is False
        assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
        assert history["messages"][1] == {"id": posted["message_id"], "role": "assistant", "content": reply_text(events)}

        # Reconnecting with the `end` id: nothing newer, so 204 stops EventSource.
        with client.open_stream(session_id, last_event_id=events[-1].id) as again:
            assert again.status_code == 204
        assert client.get(f"/api/sessions/{session_id}/stream", params={"last_event_id": events[-1].id}).status_code == 204


def test_fresh_session_gets_204(server: ChatServer) -> None:
    with server.client() as client:
        session_id = client.new_session()
        with client.open_stream(session_id) as stream:
            assert stream.status_code == 204
            assert stream.read_rest() == []


def test_plain_reconnect_replays_the_latest_turn(server: ChatServer) -> None:
    with server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "first")
        with client.open_stream(session_id) as stream:
            first = stream.until_end()
        client.send_message(session_id, "second")
        with client.open_stream(session_id) as stream:
            second = stream.until_end()
        with client.open_stream(session_id) as stream:
            replay = stream.until_end()
        assert [(e.id, e.data) for e in replay] == [(e.id, e.data) for e in second]
        # Ids keep increasing across turns.
        assert parse_event_id(second[0].id) > parse_event_id(first[-1].id)
        # From the first turn's end id, the second turn's events follow.
        with client.open_stream(session_id, last_event_id=first[-1].id) as stream:
            assert [(e.id, e.data) for e in stream.until_end()] == [(e.id, e.data) for e in second]


@pytest.fixture(scope="module")
def steady_server(start_server: ServerFactory, broker_env: dict[str, str]) -> ChatServer:
    """Replies long and slow enough to drop a reader in the middle of them."""
    return start_server({"CHATAPP_DEMO_DELAY_MS": "15", "CHATAPP_DEMO_REPLY_WORDS": "40", **broker_env})


@pytest.mark.parametrize("drop_after", [1, 2, 7, 25])
@pytest.mark.parametrize("how", ["header", "query"])
def test_resume_after_drop_misses_nothing_and_repeats_nothing(steady_server: ChatServer, drop_after: int, how: str) -> None:
    with steady_server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, f"resume after {drop_after}")
        seen: list[Received] = []
        with client.open_stream(session_id) as stream:
            for event in stream.events():
                seen.append(event)
                if len(seen) == drop_after:
                    break
        last = seen[-1].id
        if how == "header":
            resumed = client.open_stream(session_id, last_event_id=last)
        else:
            resumed = client.open_stream(session_id, params={"last_event_id": last})
        with resumed as stream:
            rest = stream.until_end()
        ids = [e.id for e in seen + rest]
        assert len(ids) == len(set(ids)), "an event arrived twice"
        # Nothing missing: the two parts are exactly the whole turn, in order.
        with client.open_stream(session_id) as stream:
            whole = stream.until_end()
        assert [(e.id, e.data) for e in seen + rest] == [(e.id, e.data) for e in whole]
        assert reply_text(seen + rest) == client.history(session_id)["messages"][-1]["content"]
        assert len(whole) == 42


@pytest.mark.parametrize("stale", ["1-0", "99999999999999-0"], ids=["older_than_the_log", "from_an_earlier_log"])
def test_a_stale_resume_point_gets_reset_then_the_turn_from_its_start(server: ChatServer, stale: str) -> None:
    with server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "remember this")
        with client.open_stream(session_id) as stream:
            turn = [i for i in stream.read_rest() if i.kind == "event"]
        with client.open_stream(session_id, last_event_id=stale) as stream:
            again = [i for i in stream.read_rest() if i.kind == "event"]
        reset, *rest = again
        assert (reset.event, reset.json()) == ("reset", {"message_id": turn[-1].json()["message_id"], "reason": "stale_resume"})
        # Then the whole turn, exactly as it was, never a silent gap.
        assert [(e.id, e.event, e.data) for e in rest] == [(e.id, e.event, e.data) for e in turn]
        # Reconnecting from the reset's own id gives the turn again, without a reset.
        with client.open_stream(session_id, last_event_id=reset.id) as stream:
            assert [e.id for e in stream.read_rest() if e.kind == "event"] == [e.id for e in turn]


def test_two_readers_get_identical_sequences(server: ChatServer) -> None:
    with server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "two tabs")
        results: dict[int, list[tuple[str, str, str]]] = {}

        def read(n: int) -> None:
            with client.open_stream(session_id) as stream:
                results[n] = [(e.id, e.event, e.data) for e in stream.until_end()]

        readers = [threading.Thread(target=read, args=(n,)) for n in range(2)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(30)
        assert len(results[0]) >= 3
        assert results[0] == results[1]


def test_second_message_while_generating_is_409_and_cancel_keeps_partial(slow_server: ChatServer) -> None:
    with slow_server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "a long answer please")
        conflict = client.post(f"/api/sessions/{session_id}/messages", json={"message": "again"})
        assert conflict.status_code == 409
        assert conflict.json()["error"]["code"] == "generation_in_progress"
        with client.open_stream(session_id, read_timeout=5) as stream:
            events: list[Received] = []
            pings_after_cancel = None
            for item in stream.items():
                if item.kind == "comment":
                    if pings_after_cancel is not None:
                        pings_after_cancel += 1
                    continue
                events.append(item)
                if sum(e.event == "token" for e in events) == 2 and pings_after_cancel is None:
                    assert client.post(f"/api/sessions/{session_id}/cancel").json() == {"cancelled": True}
                    pings_after_cancel = 0
                if item.event == "end":
                    break
            # The server closes the stream after `end`.
            assert stream.read_rest() == []
        # Words come every 1.5 s and pings every 0.4 s: a cancel that waited for the
        # next word would let three pings or more through before `end`.
        assert pings_after_cancel is not None and pings_after_cancel <= 1
        end = events[-1].json()
        assert end["finish_reason"] == "cancelled"
        partial = reply_text(events)
        assert 0 < len(partial.split()) < 40
        history = client.history(session_id)
        assert history["generating"] is False
        assert history["messages"][-1]["content"] == partial
        # The session takes the next message at once.
        client.send_message(session_id, "next")
        assert client.history(session_id)["generating"] is True


def test_heartbeats_arrive_while_the_turn_is_quiet(slow_server: ChatServer) -> None:
    with slow_server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "quiet please")
        with client.open_stream(session_id, read_timeout=5) as stream:
            items = []
            for item in stream.items():
                items.append(item)
                if sum(i.kind == "comment" for i in items) >= 3:
                    break
        client.post(f"/api/sessions/{session_id}/cancel")
        pings = [i for i in items if i.kind == "comment"]
        assert {p.data for p in pings} == {"ping"}
        assert b"\n: ping\n\n" in stream.raw


def test_disconnected_reader_is_released(slow_server: ChatServer) -> None:
    assert wait_for(lambda: slow_server.health()["streams"] == 0)
    with slow_server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "then leave")
        for _ in range(3):
            with client.open_stream(session_id) as stream:
                next(stream.events())
                assert slow_server.health()["streams"] >= 1
        # Each reader notices its client left at its next write (a heartbeat at most).
        assert wait_for(lambda: slow_server.health()["streams"] == 0, timeout=10)
        # The generation went on without its readers.
        assert client.history(session_id)["generating"] is True
        client.post(f"/api/sessions/{session_id}/cancel")


def test_follow_stays_open_across_turns(server: ChatServer) -> None:
    with server.client() as client:
        session_id = client.new_session()
        with client.open_stream(session_id, params={"follow": "1"}) as stream:
            assert stream.status_code == 200
            client.send_message(session_id, "one")
            events = stream.events()
            first = []
            for event in events:
                first.append(event)
                if event.event == "end":
                    break
            client.send_message(session_id, "two")
            second = []
            for event in events:
                second.append(event)
                if event.event == "end":
                    break
        assert [first[0].event, first[-1].event, second[0].event, second[-1].event] == ["start", "end", "start", "end"]
        assert parse_event_id(second[0].id) > parse_event_id(first[-1].id)


@pytest.fixture(scope="module", params=["gthread", "flask", "uwsgi"])
def classic_server(request: pytest.FixtureRequest, start_server: ServerFactory) -> ChatServer:
    """Classic WSGI hosting: gunicorn's threaded worker, ``flask run`` and uWSGI with gevent."""
    return start_server({"CHATAPP_DEMO_DELAY_MS": "600", "CHATAPP_DEMO_REPLY_WORDS": "3", "CHATAPP_HEARTBEAT_SECONDS": "0.25"}, kind=request.param)


def test_streams_and_heartbeats_under_classic_servers(classic_server: ChatServer) -> None:
    with classic_server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "threads")
        with client.open_stream(session_id) as stream:
            items = stream.read_rest()
        events = [i for i in items if i.kind == "event"]
        assert [e.event for e in events] == ["start", "token", "token", "token", "end"]
        assert any(i.kind == "comment" and i.data == "ping" for i in items)
        # Arrival spread over time shows nothing buffered the body until the end.
        assert events[-1].at > events[1].at
        assert reply_text(events) == client.history(session_id)["messages"][-1]["content"]
        with client.open_stream(session_id, last_event_id=events[-1].id) as again:
            assert again.status_code == 204


def test_cancel_under_classic_servers(classic_server: ChatServer) -> None:
    with classic_server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "stop me")
        with client.open_stream(session_id) as stream:
            events: list[Received] = []
            for event in stream.events():
                events.append(event)
                if event.event == "token":
                    assert client.post(f"/api/sessions/{session_id}/cancel").json() == {"cancelled": True}
                if event.event == "end":
                    break
            assert stream.read_rest() == []
        assert events[-1].json()["finish_reason"] == "cancelled"
        # Three words were coming; the cancel stopped the reply after the first.
        assert [e.event for e in events] == ["start", "token", "end"]
        history = client.history(session_id)
        assert history["generating"] is False
        assert history["messages"][-1]["content"] == reply_text(events)


def test_disconnected_reader_is_released_under_classic_servers(classic_server: ChatServer) -> None:
    assert wait_for(lambda: classic_server.health()["streams"] == 0)
    with classic_server.client() as client:
        session_id = client.new_session()
        # A follow stream never ends by itself: only the client leaving can release it.
        with client.open_stream(session_id, params={"follow": "1"}) as stream:
            assert next(stream.items()).data == "ping"
            assert classic_server.health()["streams"] == 1
        assert wait_for(lambda: classic_server.health()["streams"] == 0, timeout=10)
