"""chatapp on a real Redis Cluster (3 masters, 3 replicas, started by the tests): two
servers of two workers each serve one conversation; a master killed mid-reply fails over
to its replica and the turn still ends, in order, with nothing completed lost."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from chatapp.broker.base import parse_event_id
from tests.broker.test_scaleout import SECRET, client_for
from tests.support.redis_cluster import TestCluster
from tests.support.servers import ChatServer, ServerFactory, wait_for
from tests.support.sseclient import Received, reply_text


def cluster_env(cluster: TestCluster, **extra: str) -> dict[str, str]:
    return {"CHATAPP_REDIS_URL": cluster.url, "CHATAPP_SECRET_KEY": SECRET, "WEB_CONCURRENCY": "2", **extra}


@pytest.fixture(scope="module")
def pair(start_server: ServerFactory, redis_cluster: TestCluster) -> tuple[ChatServer, ChatServer]:
    env = cluster_env(redis_cluster, CHATAPP_DEMO_DELAY_MS="20", CHATAPP_DEMO_REPLY_WORDS="40", CHATAPP_RATE_LIMIT="1000/minute")
    return start_server(env), start_server(env)


def test_two_servers_share_sessions_streams_and_history(pair: tuple[ChatServer, ChatServer]) -> None:
    first, second = pair
    with first.client() as on_first, client_for(second, on_first) as on_second:
        session_id = on_first.new_session()
        on_first.send_message(session_id, "hello cluster")
        with on_second.open_stream(session_id) as stream:
            events = [e for e in stream.read_rest() if e.kind == "event"]
        assert [e.event for e in events][0] == "start" and events[-1].event == "end"
        ids = [parse_event_id(e.id) for e in events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        # Resume from the middle on the other server: exactly the rest.
        middle = events[len(events) // 2]
        with on_first.open_stream(session_id, last_event_id=middle.id) as stream:
            rest = [e for e in stream.read_rest() if e.kind == "event"]
        assert [e.id for e in rest] == [e.id for e in events[len(events) // 2 + 1 :]]
        assert on_first.history(session_id)["messages"][-1]["content"] == reply_text(events)
        # A second turn, posted on the other server.
        on_second.send_message(session_id, "and again")
        with on_first.open_stream(session_id) as stream:
            again = [e for e in stream.read_rest() if e.kind == "event"]
        assert again[-1].event == "end" and parse_event_id(again[0].id) > ids[-1]


def test_a_master_killed_mid_reply_fails_over_and_the_turn_ends(start_server: ServerFactory, tmp_path: Path) -> None:
    # A cluster of its own: the run's shared one keeps all its masters.
    own = TestCluster(tmp_path)
    try:
        _fails_over(start_server, own)
    finally:
        own.stop()


def _fails_over(start_server: ServerFactory, redis_cluster: TestCluster) -> None:
    env = cluster_env(redis_cluster, CHATAPP_DEMO_DELAY_MS="100", CHATAPP_DEMO_REPLY_WORDS="80", CHATAPP_HEARTBEAT_SECONDS="1", CHATAPP_CONTINUE="prefill")
    first, second = start_server(env), start_server(env)
    with first.client() as on_first, client_for(second, on_first) as on_second:
        session_id = on_first.new_session()
        on_first.send_message(session_id, "a finished turn")
        assert wait_for(lambda: not on_first.history(session_id)["generating"], timeout=30)
        finished = on_first.history(session_id)["messages"]
        on_first.send_message(session_id, "survive a failover")
        master = redis_cluster.master_of(f"chatapp:{{{session_id}}}:meta")
        got: list[Received] = []
        done = threading.Event()

        def read() -> None:
            after = None
            # Reconnect as EventSource would when a read fails during the failover.
            for _ in range(20):
                try:
                    with on_second.open_stream(session_id, last_event_id=after, read_timeout=20) as stream:
                        for event in stream.events():
                            got.append(event)
                            after = event.id
                            if event.event == "end":
                                done.set()
                                return
                except Exception:
                    pass
                if done.is_set():
                    return
                threading.Event().wait(0.5)

        reader = threading.Thread(target=read)
        reader.start()
        assert wait_for(lambda: sum(1 for e in got if e.event == "token") >= 5, timeout=20)
        redis_cluster.kill(master)
        reader.join(90)
        assert done.is_set(), [e.event for e in got]
        names = [e.event for e in got]
        assert names[0] == "start" and names[-1] == "end"
        ids = [parse_event_id(e.id) for e in got]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        end = got[-1].json()
        # Continued (stop), or ended with an error after what came before.
        assert end["finish_reason"] == "stop" or names[-2] == "error", names
        history = on_second.history(session_id)["messages"]
        assert history[: len(finished)] == finished
