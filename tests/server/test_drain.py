"""Deploys that cut nothing: SIGTERM to a whole server while it streams a reply.

On Redis the stopping server hands its turn over before its graceful time is up and
closes its streams cleanly; the reader reconnects with its last id to the server that
stays (as a load balancer would send it) and reads the rest, nothing lost or doubled.
On the memory broker there is nobody to hand over to: the turn ends with
``server_restarting``, and no reader hangs.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from chatapp.providers.demo import DemoProvider
from tests.broker.test_scaleout import client_for, redis_env
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerFactory, wait_for
from tests.support.sseclient import Received

WORDS = 80
MESSAGE = "keep talking through a deploy"
GRACEFUL = "3"


def test_sigterm_on_redis_hands_the_turn_over_and_readers_resume_elsewhere(start_server: ServerFactory, tmp_path: Path) -> None:
    own = RedisServer(tmp_path)
    try:
        env = redis_env(
            own.url, CHATAPP_DEMO_DELAY_MS="150", CHATAPP_DEMO_REPLY_WORDS=str(WORDS), CHATAPP_CONTINUE="prefill", CHATAPP_GRACEFUL_TIMEOUT=GRACEFUL
        )
        stopping, staying = start_server(env), start_server(env)
        with stopping.client() as on_stopping, client_for(staying, on_stopping) as on_staying:
            session_id = on_stopping.new_session()
            idle = on_stopping.new_session()
            on_stopping.send_message(session_id, MESSAGE)
            seen: list[Received] = []
            with on_stopping.open_stream(idle, params={"follow": "1"}, read_timeout=30) as idle_stream, on_stopping.open_stream(
                session_id, read_timeout=30
            ) as stream:
                for event in stream.events():
                    seen.append(event)
                    if sum(1 for e in seen if e.event == "token") == 5:
                        stopping.process.send_signal(signal.SIGTERM)
                        signalled = time.monotonic()
                # The stopping server closed the stream before the end, within its graceful time.
                closed_after = time.monotonic() - signalled
                assert seen[-1].event != "end"
                assert closed_after < float(GRACEFUL) + 1.0
                # The idle follower was told to go too: its response ended cleanly (a cut
                # would raise here), with nothing but the retry and heartbeats in it.
                assert [item.kind for item in idle_stream.read_rest() if item.kind == "event"] == []
            # Reconnect with the last id to the server that stays.
            with on_staying.open_stream(session_id, last_event_id=seen[-1].id, read_timeout=30) as rest:
                seen += [e for e in rest.read_rest() if e.kind == "event"]
        names = [e.event for e in seen]
        assert names[0] == "start" and names[-1] == "end" and "error" not in names, names
        assert seen[-1].json()["finish_reason"] == "stop"
        text = "".join(e.json()["text"] for e in seen if e.event == "token")
        assert text == "".join(DemoProvider(reply_words=WORDS).reply_for(MESSAGE))
        ids = [e.id for e in seen]
        assert len(set(ids)) == len(ids)
        # Handed over, not lapsed: another worker carried it on.
        assert "resumed" in names
        assert "handed over" in stopping.log() or "handing them over" in stopping.log()
        assert stopping.process.wait(10) == 0
    finally:
        own.stop()


def test_sigterm_on_the_memory_broker_ends_the_turn_with_server_restarting(start_server: ServerFactory) -> None:
    server = start_server({"CHATAPP_DEMO_DELAY_MS": "200", "CHATAPP_DEMO_REPLY_WORDS": "200", "CHATAPP_GRACEFUL_TIMEOUT": GRACEFUL})
    with server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, MESSAGE)
        seen: list[Received] = []
        with client.open_stream(session_id, read_timeout=30) as stream:
            for event in stream.events():
                seen.append(event)
                if sum(1 for e in seen if e.event == "token") == 3:
                    server.process.send_signal(signal.SIGTERM)
                    signalled = time.monotonic()
        assert time.monotonic() - signalled < float(GRACEFUL) + 1.0
    names = [e.event for e in seen]
    assert names[-2:] == ["error", "end"], names
    assert seen[-2].json()["code"] == "server_restarting" and seen[-2].json()["retryable"] is True
    assert seen[-1].json()["finish_reason"] == "error"
    assert wait_for(lambda: server.process.poll() is not None, timeout=10)
