"""Takeover: kill -9 the worker producing a reply, and another worker finishes it.

Two gunicorn servers with two workers each share one Redis; readers on the surviving
server never notice more than a pause. ``CHATAPP_CONTINUE`` decides how the reply goes
on: ``prefill`` continues it where it stopped, ``restart`` starts it again after a
``reset`` event (``off``, today's ``generation_interrupted``, is in test_scaleout).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from chatapp.providers.demo import DemoProvider
from tests.broker.test_scaleout import client_for, redis_env
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerFactory, wait_for
from tests.support.sseclient import Received

WORDS = 40
DELAY_MS = 150
MESSAGE = "please survive a crash"


def full_reply() -> str:
    return "".join(DemoProvider(reply_words=WORDS).reply_for(MESSAGE))


def text_after_last_reset(events: list[Received]) -> str:
    names = [e.event for e in events]
    start = max((i for i, name in enumerate(names) if name == "reset"), default=-1) + 1
    return "".join(e.json()["text"] for e in events[start:] if e.event == "token")


@pytest.mark.parametrize("mode", ["prefill", "restart"])
def test_a_killed_producer_is_taken_over_and_the_reply_completes(start_server: ServerFactory, mode: str, tmp_path: Path) -> None:
    # A Redis of its own: no server of another test may take this turn over.
    own = RedisServer(tmp_path)
    try:
        _taken_over(start_server, own, mode, tmp_path)
    finally:
        own.stop()


def _taken_over(start_server: ServerFactory, redis_server: RedisServer, mode: str, tmp_path: Path) -> None:
    env = redis_env(
        redis_server.url, CHATAPP_DEMO_DELAY_MS=str(DELAY_MS), CHATAPP_DEMO_REPLY_WORDS=str(WORDS), CHATAPP_HEARTBEAT_SECONDS="1", CHATAPP_CONTINUE=mode
    )
    # Each server's /metrics sums its workers, whichever of them took the turn over.
    doomed = start_server({**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "doomed")})
    survivor = start_server({**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "survivor")})
    with doomed.client() as on_doomed, client_for(survivor, on_doomed) as on_survivor:
        session_id = on_doomed.new_session()
        on_doomed.send_message(session_id, MESSAGE)
        results: dict[int, list[tuple[float, Received]]] = {}
        started = [threading.Event(), threading.Event()]

        def read(n: int) -> None:
            # The read timeout only guards against a hang.
            with client_for(survivor, on_doomed) as client, client.open_stream(session_id, read_timeout=30) as stream:
                events = []
                for event in stream.events():
                    events.append((time.monotonic(), event))
                    if event.event == "token" and sum(1 for _, e in events if e.event == "token") >= 5:
                        started[n].set()
                    if event.event == "end":
                        break
                results[n] = events

        readers = [threading.Thread(target=read, args=(n,)) for n in range(2)]
        for reader in readers:
            reader.start()
        assert all(flag.wait(20) for flag in started)
        killed_at = time.monotonic()
        for pid in doomed.worker_pids():
            os.kill(pid, signal.SIGKILL)
        for reader in readers:
            reader.join(60)
        assert all(n in results for n in range(2)), "a reader never saw the end"

        for n in range(2):
            timed = results[n]
            events = [e for _, e in timed]
            names = [e.event for e in events]
            assert names[0] == "start" and names[-1] == "end" and "error" not in names, names
            assert events[-1].json()["finish_reason"] == "stop"
            # One reply, as the reader sees it.
            assert text_after_last_reset(events) == full_reply()
            ids = [e.id for e in events]
            assert len(set(ids)) == len(ids)
            if mode == "prefill":
                [resumed] = [e for e in events if e.event == "resumed"]
                before = "".join(e.json()["text"] for e in events[: names.index("resumed")] if e.event == "token")
                assert resumed.json() == {"message_id": events[-1].json()["message_id"], "after_chars": len(before)}
                assert "reset" not in names
            else:
                assert names.count("reset") == 1
                assert events[names.index("reset")].json() == {"message_id": events[-1].json()["message_id"], "reason": "restarted"}
            # The pause the user saw: from the kill to the next token.
            after_kill = [t for t, e in timed if t > killed_at and e.event == "token"]
            assert after_kill and after_kill[0] - killed_at < 10.0
        # Both readers saw the same log.
        assert [e.id for _, e in results[0]] == [e.id for _, e in results[1]]

        history = on_survivor.history(session_id)
        assert history["generating"] is False
        assert history["messages"][-1]["content"] == full_reply()
        assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
        metrics = on_survivor.get("/metrics").text
        how = "continued" if mode == "prefill" else "restarted"
        assert f'chatapp_takeovers_total{{how="{how}"}} 1.0' in metrics
        # The session takes the next message.
        on_survivor.send_message(session_id, "and again")
        assert wait_for(lambda: not on_survivor.history(session_id)["generating"], timeout=30)
    # Servers left running would sweep the next test's turns (in their own mode).
    survivor.stop()


def test_a_paused_producer_that_wakes_after_a_takeover_writes_nothing(start_server: ServerFactory, tmp_path: Path) -> None:
    own = RedisServer(tmp_path)
    try:
        env = redis_env(own.url, CHATAPP_DEMO_DELAY_MS=str(DELAY_MS), CHATAPP_DEMO_REPLY_WORDS=str(WORDS), CHATAPP_CONTINUE="prefill")
        paused, survivor = start_server(env), start_server(env)
        with paused.client() as on_paused, client_for(survivor, on_paused) as on_survivor:
            session_id = on_paused.new_session()
            on_paused.send_message(session_id, MESSAGE)
            assert wait_for(lambda: len(on_survivor.history(session_id)["messages"]) == 1)
            with on_survivor.open_stream(session_id, read_timeout=30) as stream:
                events = []
                for event in stream.events():
                    events.append(event)
                    if sum(1 for e in events if e.event == "token") == 5:
                        # Frozen, not dead: its lease lapses and the survivor takes over.
                        for pid in paused.worker_pids():
                            os.kill(pid, signal.SIGSTOP)
                    if event.event == "end":
                        break
            # The frozen producer wakes to find its turn taken: it must write nothing more.
            for pid in paused.worker_pids():
                os.kill(pid, signal.SIGCONT)
            time.sleep(3)
            assert text_after_last_reset(events) == full_reply()
            assert [e.event for e in events].count("end") == 1
            after_end = on_survivor.get(f"/api/sessions/{session_id}/stream", headers={"Last-Event-ID": events[-1].id})
            assert after_end.status_code == 204
            history = on_survivor.history(session_id)
            assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
            assert history["messages"][-1]["content"] == full_reply()
            assert "superseded" in paused.log() or "another worker took it over" in paused.log()
    finally:
        own.stop()


@pytest.mark.parametrize("mode", ["off", "restart"])
def test_a_killed_producer_with_no_reader_frees_its_session(start_server: ServerFactory, tmp_path: Path, mode: str) -> None:
    own = RedisServer(tmp_path)
    try:
        env = redis_env(own.url, CHATAPP_DEMO_DELAY_MS="100", CHATAPP_DEMO_REPLY_WORDS="30", CHATAPP_CONTINUE=mode)
        doomed, survivor = start_server(env), start_server(env)
        with doomed.client() as on_doomed, client_for(survivor, on_doomed) as on_survivor:
            session_id = on_doomed.new_session()
            # The survivor has served a request: its sweep runs.
            assert on_survivor.history(session_id)["generating"] is False
            on_doomed.send_message(session_id, MESSAGE)
            time.sleep(1.0)
            for pid in doomed.worker_pids():
                os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            # Nobody reads: the sweep alone ends the turn (off) or finishes it (restart).
            assert wait_for(lambda: not on_survivor.history(session_id)["generating"], timeout=30)
            assert time.monotonic() - killed < 10.0
            last = on_survivor.history(session_id)["messages"][-1]
            assert last["role"] == "assistant"
            if mode == "restart":
                assert last["content"] == "".join(DemoProvider(reply_words=30).reply_for(MESSAGE))
            # The session takes the next message.
            on_survivor.send_message(session_id, "next")
    finally:
        own.stop()
