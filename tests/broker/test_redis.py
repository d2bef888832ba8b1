"""What only the Redis broker does: leases that lapse, batched writes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from chatapp.broker.redis import RedisBroker
from tests.support.redis_server import RedisServer


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[RedisBroker]:
    redis_server.client().flushall()
    backend = RedisBroker(redis_server.url)
    yield backend
    backend.close()


def test_a_lapsed_stream_slot_frees_itself(broker: RedisBroker) -> None:
    # A worker killed with a stream open never releases its slot; the lease does.
    assert broker.hold_stream("carol", 1, 0.2)
    assert broker.hold_stream("carol", 1, 0.2) is None
    time.sleep(0.4)
    assert broker.hold_stream("carol", 1, 0.2)


def test_a_fast_turn_costs_far_fewer_writes_than_tokens(broker: RedisBroker, redis_server: RedisServer) -> None:
    session_id = broker.create_session("alice")
    turn = broker.begin_turn(session_id, "hi")
    before = redis_server.command_calls().get("xadd", 0)
    for index in range(2000):
        broker.publish(turn, [("token", f'{{"text":"{index}"}}')])
    broker.finish_turn(turn, "", [("end", "{}")])
    writes = redis_server.command_calls().get("xadd", 0) - before
    events, after = [], None
    while part := broker.read(session_id, after, 0):
        events += part
        after = part[-1].id
    assert len(events) == 2001
    # Tokens published faster than one write per 2 ms gather into shared entries.
    assert writes < 2000 / 10


def test_a_dead_producer_ends_its_turn_once_keeping_reasoning_and_text(broker: RedisBroker, redis_server: RedisServer) -> None:
    from chatapp import events
    from chatapp.broker.redis.keys import session_keys

    session_id = broker.create_session("alice")
    turn = broker.begin_turn(session_id, "hi")
    broker.publish(turn, [events.start(turn.message_id, "m", cached=False), events.reasoning("Think "), events.reasoning("hard."), events.token("Half")])
    # The producer dies: its writer stops beating and the liveness key lapses.
    writer = broker._writers.pop(turn.message_id)
    writer.close()
    redis_server.client().delete(session_keys(session_id).alive)
    seen = []
    after = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (seen and seen[-1].event == "end"):
        part = broker.read(session_id, after, 1.0)
        if part:
            seen += part
            after = part[-1].id
    assert [e.event for e in seen] == ["start", "reasoning", "reasoning", "token", "error", "end"]
    assert seen[-2].payload()["code"] == "generation_interrupted"
    assert seen[-1].payload() == {"message_id": turn.message_id, "finish_reason": "error", "usage": None}
    info = broker.get_session(session_id)
    assert info is not None and info.generating is False
    assert info.messages[-1].to_dict() == {"id": turn.message_id, "role": "assistant", "content": "Half", "reasoning": "Think hard."}


def test_history_is_stored_as_utf8_not_escapes(broker: RedisBroker, redis_server: RedisServer) -> None:
    session_id = broker.create_session("alice")
    turn = broker.begin_turn(session_id, "😀 é 中")
    broker.finish_turn(turn, "ok ✓", [("end", "{}")])
    stored = redis_server.client().lrange(f"chatapp:{{{session_id}}}:messages", 0, -1)
    assert "😀 é 中".encode() in stored[0] and b"\\u" not in b"".join(stored)
    assert [m.content for m in broker.get_session(session_id).messages] == ["😀 é 中", "ok ✓"]


def test_ownership_checks_and_cancel_never_load_history(broker: RedisBroker, redis_server: RedisServer) -> None:
    session_id = broker.create_session("alice")
    broker.finish_turn(broker.begin_turn(session_id, "x" * 10_000), "y" * 10_000, [("end", "{}")])
    broker.begin_turn(session_id, "again")
    redis_server.client().config_resetstat()
    for _ in range(16):
        assert broker.owner_of(session_id) == "alice"
        assert broker.request_cancel(session_id) is True
        assert broker.is_generating(session_id)
    assert redis_server.command_calls().get("lrange", 0) == 0
    # A page of history reads only the page.
    page = broker.history_page(session_id, before=None, limit=1, max_bytes=1_000_000)
    assert page is not None and [m.content for m in page.messages] == ["again"] and page.start == 2
    assert redis_server.command_calls().get("lrange", 0) == 1
