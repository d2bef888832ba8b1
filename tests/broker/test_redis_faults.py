"""Redis faults through real servers on Redis servers of the tests' own: ids Redis cannot
take, a Redis out of memory, and deletes racing a reply's writes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.broker.test_scaleout import redis_env
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerFactory, wait_for


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test, which it may fill and reconfigure."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.mark.parametrize(
    "value",
    ["18446744073709551616-0", "0-18446744073709551616", "99999999999999999999-99999999999999999999"],
)
def test_ids_past_what_redis_takes_are_a_400(start_server: ServerFactory, redis_server: RedisServer, value: str) -> None:
    server = start_server(redis_env(redis_server.url, CHATAPP_DEMO_DELAY_MS="1", CHATAPP_DEMO_REPLY_WORDS="3", WEB_CONCURRENCY="1"))
    with server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "hello")
        for response in (
            client.get(f"/api/sessions/{session_id}/stream", headers={"Last-Event-ID": value}),
            client.get(f"/api/sessions/{session_id}/stream", params={"last_event_id": value}),
        ):
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] == "invalid_last_event_id"
        # The largest id Redis takes is well formed: no error, but no event of this log
        # either, so the reader is told to start the turn over (a reset, never a gap).
        assert wait_for(lambda: not client.history(session_id)["generating"])
        top = client.get(f"/api/sessions/{session_id}/stream", headers={"Last-Event-ID": "18446744073709551615-18446744073709551615"})
        assert top.status_code == 200 and b"event: reset\n" in top.content and b'"reason":"stale_resume"' in top.content
    assert "Traceback" not in server.log()


def fill(client: redis.Redis) -> None:
    """Write junk until Redis refuses even the smallest write for want of memory."""
    written = 0
    for size in (50_000, 1000, 10):
        for _ in range(100_000):
            try:
                client.set(f"junk:{written}", b"x" * size)
            except redis.exceptions.OutOfMemoryError:
                break
            written += 1
        else:
            raise AssertionError("Redis never reached its maxmemory")


def test_a_full_redis_is_a_503_broker_full_logged_once_and_service_comes_back(start_server: ServerFactory, own_redis: RedisServer) -> None:
    server = start_server(redis_env(own_redis.url, CHATAPP_DEMO_DELAY_MS="1", CHATAPP_DEMO_REPLY_WORDS="5", WEB_CONCURRENCY="1"))
    admin = own_redis.client()
    with server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "before")
        assert wait_for(lambda: not client.history(session_id)["generating"])
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", str(used + 2_000_000))
        fill(admin)
        refusals = [
            client.post("/api/sessions", json={}),
            *(client.post(f"/api/sessions/{session_id}/messages", json={"message": f"during {i}"}) for i in range(5)),
        ]
        for response in refusals:
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "broker_full"
            assert int(response.headers["retry-after"]) >= 1
            assert "redis://" not in response.text
        # Reading still works while Redis is full.
        assert client.history(session_id)["messages"][-1]["role"] == "assistant"
        # Logged once for all those refusals, and no traceback.
        log = server.log()
        assert log.count("redis is out of memory") == 1, log[-3000:]
        assert "Traceback" not in log
        # Room again: the same session takes its next message, and a new one can start.
        admin.config_set("maxmemory", "0")
        client.send_message(session_id, "after")
        with client.open_stream(session_id) as stream:
            assert stream.until_end()[-1].json()["finish_reason"] == "stop"
        client.new_session()


def keys_without_ttl(client: redis.Redis) -> list[bytes]:
    return [key for key in client.scan_iter("chatapp:{*") if client.pttl(key) == -1]


def test_deletes_during_replies_leave_no_key_without_a_ttl(start_server: ServerFactory, own_redis: RedisServer) -> None:
    server = start_server(
        redis_env(own_redis.url, CHATAPP_DEMO_DELAY_MS="2", CHATAPP_DEMO_REPLY_WORDS="400", CHATAPP_RATE_LIMIT="10000/minute")
    )
    admin = own_redis.client()
    with server.client() as client:
        for run in range(40):
            session_id = client.new_session()
            client.send_message(session_id, f"a reply to cut short {run}")
            # Delete while the reply is being written, at a different moment each run.
            with client.open_stream(session_id) as stream:
                for count, _ in enumerate(stream.events()):
                    if count >= 2 + run % 7:
                        break
            assert client.delete(f"/api/sessions/{session_id}").status_code == 204
        # Every producer has stopped writing by now (cancelled by the delete).
        time.sleep(1.5)
        assert keys_without_ttl(admin) == []
        # The deleted sessions left nothing behind (bar liveness keys about to lapse).
        left = [key for key in admin.scan_iter("chatapp:{*") if not key.endswith((b":alive", b":notify"))]
        assert left == [], left[:5]
