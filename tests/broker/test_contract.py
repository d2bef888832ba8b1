"""The broker contract, run against every backend so they cannot drift apart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from chatapp.broker.base import Broker, parse_event_id
from chatapp.broker.memory import MemoryBroker
from chatapp.errors import ConflictError, SessionNotFoundError


@pytest.fixture(params=["memory", "redis", "cluster"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    if request.param == "redis":
        from chatapp.broker.redis import RedisBroker

        server = request.getfixturevalue("redis_server")
        server.client().flushall()
        backend: Broker = RedisBroker(server.url)
    elif request.param == "cluster":
        from chatapp.broker.redis import RedisBroker

        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        backend = RedisBroker(cluster.url)
    else:
        backend = MemoryBroker()
    yield backend
    backend.close()


@pytest.fixture(params=["memory", "redis", "cluster"])
def ttl_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """A backend whose sessions expire after one idle second."""
    if request.param == "redis":
        from chatapp.broker.redis import RedisBroker

        server = request.getfixturevalue("redis_server")
        server.client().flushall()
        backend: Broker = RedisBroker(server.url, session_ttl_seconds=1)
    elif request.param == "cluster":
        from chatapp.broker.redis import RedisBroker

        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        backend = RedisBroker(cluster.url, session_ttl_seconds=1)
    else:
        backend = MemoryBroker(session_ttl_seconds=1)
    yield backend
    backend.close()


def run_turn(broker: Broker, session_id: str, text: str, tokens: list[str]) -> list:
    turn = broker.begin_turn(session_id, text)
    broker.publish(turn, [("start", "{}")])
    broker.publish(turn, [("token", f'"{t}"') for t in tokens])
    broker.finish_turn(turn, "".join(tokens), [("end", "{}")])
    return broker.read(session_id, None, 0)


def test_sessions_are_unguessable_and_owned(broker: Broker) -> None:
    ids = {broker.create_session("alice") for _ in range(50)}
    assert len(ids) == 50
    session_id = ids.pop()
    assert len(session_id) >= 22
    info = broker.get_session(session_id)
    assert info is not None
    assert (info.owner, info.messages, info.generating) == ("alice", (), False)
    assert broker.get_session("missing") is None


def test_owner_of_and_is_generating_answer_without_history(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    assert (broker.owner_of(session_id), broker.is_generating(session_id)) == ("alice", False)
    turn = broker.begin_turn(session_id, "hi")
    assert broker.is_generating(session_id) is True
    broker.finish_turn(turn, "", [("end", "{}")])
    assert broker.is_generating(session_id) is False
    broker.delete_session(session_id)
    assert (broker.owner_of(session_id), broker.is_generating(session_id)) == (None, False)
    assert broker.owner_of("missing") is None


def test_a_turn_gets_the_whole_history_from_begin(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    run_turn(broker, session_id, "first", ["one"])
    turn = broker.begin_turn(session_id, "second")
    assert [(m.role, m.content) for m in turn.history] == [("user", "first"), ("assistant", "one"), ("user", "second")]
    broker.finish_turn(turn, "", [("end", "{}")])


def test_a_turn_stores_history_and_events(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    events = run_turn(broker, session_id, "hi", ["a", "b"])
    assert [e.event for e in events] == ["start", "token", "token", "end"]
    assert events[1].frame == f'event: token\nid: {events[1].id}\ndata: "a"\n\n'.encode()
    info = broker.get_session(session_id)
    assert [(m.role, m.content) for m in info.messages] == [("user", "hi"), ("assistant", "ab")]
    assert info.generating is False


def test_ids_increase_across_turns_and_reads_resume_after_an_id(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    first = run_turn(broker, session_id, "one", ["x"] * 5)
    second = run_turn(broker, session_id, "two", ["y"] * 5)
    keys = [parse_event_id(e.id) for e in first + second]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    # No id: the latest turn from its start.
    assert [e.id for e in broker.read(session_id, None, 0)] == [e.id for e in second]
    # After an id: exactly what follows it, across the turn boundary.
    assert [e.id for e in broker.read(session_id, first[2].id, 0)] == [e.id for e in first[3:] + second]
    assert broker.read(session_id, second[-1].id, 0) == []


def test_one_turn_at_a_time(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    turn = broker.begin_turn(session_id, "one")
    with pytest.raises(ConflictError):
        broker.begin_turn(session_id, "two")
    assert broker.get_session(session_id).generating is True
    broker.finish_turn(turn, "", [("end", "{}")])
    broker.begin_turn(session_id, "three")


def test_concurrent_begins_admit_exactly_one(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    results: list[str] = []
    barrier = threading.Barrier(8)

    def begin() -> None:
        barrier.wait()
        try:
            broker.begin_turn(session_id, "race")
            results.append("ok")
        except ConflictError:
            results.append("conflict")

    threads = [threading.Thread(target=begin) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["conflict"] * 7 + ["ok"]


def test_read_blocks_until_a_publish_wakes_it(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    turn = broker.begin_turn(session_id, "hi")
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(broker.read(session_id, None, 30)))
    reader.start()
    reader.join(0.2)
    assert reader.is_alive(), "read returned before anything was published"
    broker.publish(turn, [("start", "{}")])
    reader.join(10)
    assert not reader.is_alive()
    assert [e.event for e in got] == ["start"]


def test_read_times_out_empty(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    broker.begin_turn(session_id, "hi")
    assert broker.read(session_id, None, 0.05) == []


def test_cancel_sets_the_turns_flag(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    assert broker.request_cancel(session_id) is False
    turn = broker.begin_turn(session_id, "hi")
    assert broker.request_cancel(session_id) is True
    # Another host's producer may learn of it through a notification: allow a moment.
    assert turn.cancelled.wait(5)
    with pytest.raises(SessionNotFoundError):
        broker.request_cancel("missing")


def test_delete_wakes_readers_and_forgets(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    turn = broker.begin_turn(session_id, "hi")
    errors: list[Exception] = []

    def read() -> None:
        try:
            broker.read(session_id, None, 30)
        except SessionNotFoundError as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(0.1)
    assert broker.delete_session(session_id) is True
    reader.join(10)
    assert len(errors) == 1
    assert turn.cancelled.wait(5)
    assert broker.get_session(session_id) is None
    assert broker.delete_session(session_id) is False
    with pytest.raises(SessionNotFoundError):
        broker.begin_turn(session_id, "again")


def test_unknown_session_reads_raise(broker: Broker) -> None:
    with pytest.raises(SessionNotFoundError):
        broker.read("missing", None, 0)


def test_ping(broker: Broker) -> None:
    assert broker.ping() is True


def test_backlog_with_a_stale_id_resets_and_starts_the_latest_turn_over(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    assert broker.backlog(session_id, "5-0") == []
    first = run_turn(broker, session_id, "one", ["a"] * 3)
    second = run_turn(broker, session_id, "two", ["b"] * 3)
    third = run_turn(broker, session_id, "three", ["c"] * 3)
    # An id of the right shape that the log never held (between two real ones).
    ms, seq = parse_event_id(third[-1].id)
    never = f"{ms - 1}-{seq + 5000}"
    for stale in (first[1].id, "1-0", "99999999999999-0", never):
        # Older than what is kept, or newer than anything in the log (an earlier log's).
        reset, *rest = broker.backlog(session_id, stale)
        assert [e.id for e in rest] == [e.id for e in third]
        assert reset.event == "reset" and reset.payload()["reason"] == "stale_resume"
        # Resuming from the reset gives the turn again, nothing more, nothing less.
        assert parse_event_id(reset.id) < parse_event_id(third[0].id)
        assert [e.id for e in broker.backlog(session_id, reset.id)] == [e.id for e in third]
    # An id inside the previous turn still gets that turn's rest, then the latest.
    assert [e.id for e in broker.backlog(session_id, second[1].id)] == [e.id for e in second[2:] + third]
    assert [e.id for e in broker.backlog(session_id, None)] == [e.id for e in third]


def test_many_quick_publishes_keep_one_id_each(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    turn = broker.begin_turn(session_id, "hi")
    for index in range(300):
        broker.publish(turn, [("token", f'{{"text":"{index}"}}')])
    broker.finish_turn(turn, "", [("end", "{}")])
    events = broker.read(session_id, None, 0)
    assert [e.data for e in events[:-1]] == [f'{{"text":"{i}"}}' for i in range(300)]
    keys = [parse_event_id(e.id) for e in events]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    # Resuming from any event id gives exactly what follows it.
    for cut in (0, 1, 57, 150, 299):
        assert [e.id for e in broker.read(session_id, events[cut].id, 0)] == [e.id for e in events[cut + 1 :]]


def test_count_sessions_per_owner(broker: Broker) -> None:
    assert broker.count_sessions("alice") == 0
    ids = [broker.create_session("alice") for _ in range(3)]
    broker.create_session("bob")
    assert (broker.count_sessions("alice"), broker.count_sessions("bob")) == (3, 1)
    broker.delete_session(ids[0])
    assert broker.count_sessions("alice") == 2
    assert broker.count_sessions("nobody") == 0


def test_history_bound_refuses_a_turn_and_stores_nothing(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    run_turn(broker, session_id, "one", ["a"])
    run_turn(broker, session_id, "two", ["b"])
    # Four messages stored; a fifth and its reply would make six.
    with pytest.raises(ConflictError) as caught:
        broker.begin_turn(session_id, "three", max_messages=5)
    assert caught.value.code == "history_full"
    info = broker.get_session(session_id)
    assert [m.content for m in info.messages] == ["one", "a", "two", "b"]
    assert info.generating is False
    # Exactly at the bound is allowed.
    turn = broker.begin_turn(session_id, "three", max_messages=6)
    broker.finish_turn(turn, "c", [("end", "{}")])
    assert len(broker.get_session(session_id).messages) == 6


def test_idle_sessions_expire(ttl_broker: Broker) -> None:
    idle = ttl_broker.create_session("alice")
    busy = ttl_broker.create_session("alice")
    turn = ttl_broker.begin_turn(busy, "a turn keeps its session alive")
    time.sleep(1.5)
    assert ttl_broker.get_session(idle) is None
    assert ttl_broker.count_sessions("alice") == 1
    with pytest.raises(SessionNotFoundError):
        ttl_broker.read(idle, None, 0)
    assert ttl_broker.get_session(busy) is not None
    ttl_broker.finish_turn(turn, "done", [("end", "{}")])


def test_stream_slots_are_shared_where_the_backend_is(broker: Broker) -> None:
    first = broker.hold_stream("alice", 2, 60)
    if first == "":
        # One process: the caller's own count is the whole count.
        assert broker.hold_stream("alice", 2, 60) == ""
        return
    second = broker.hold_stream("alice", 2, 60)
    assert first and second and first != second
    assert broker.hold_stream("alice", 2, 60) is None
    assert broker.hold_stream("bob", 2, 60)
    broker.release_stream("alice", first)
    third = broker.hold_stream("alice", 2, 60)
    assert third
    broker.renew_stream("alice", third, 60)



def test_a_long_log_comes_in_bounded_reads_that_miss_nothing(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    turn = broker.begin_turn(session_id, "long")
    broker.publish(turn, [("token", f'"{index}"') for index in range(5000)])
    broker.finish_turn(turn, "", [("end", "{}")])
    got, after = [], None
    while True:
        part = broker.read(session_id, after, 0)
        if not part:
            break
        # A reader that stopped reading holds one part, never the whole log.
        assert len(part) <= 1024
        got += part
        after = part[-1].id
    assert [e.data for e in got] == [f'"{index}"' for index in range(5000)] + ["{}"]


def test_a_reader_gets_a_long_finished_turn_without_waiting(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    turn = broker.begin_turn(session_id, "long")
    for index in range(3000):
        broker.publish(turn, [("token", f'"{index}"')])
    broker.finish_turn(turn, "", [("end", "{}")])
    reader = broker.reader(session_id)
    got, after = [], None
    try:
        # Nothing more will be published: every part must come without a wake-up. The
        # long timeout would make a reader that waits for one fail the hang guard.
        while not got or got[-1].event != "end":
            part = reader.read(after, 30)
            assert part, "the reader waited instead of reading what is kept"
            got += part
            after = part[-1].id
    finally:
        reader.close()
    assert len(got) == 3001


def test_waking_a_reader_ends_its_wait_at_once(broker: Broker) -> None:
    session_id = broker.create_session("alice")
    run_turn(broker, session_id, "one", ["a"])
    reader = broker.reader(session_id)
    last = broker.read(session_id, None, 0)[-1].id
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(reader.read(last, 30)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.3)
    reader.wake()
    waiter.join(5)
    assert not waiter.is_alive() and got == [[]]
    assert time.monotonic() - started < 5
    reader.close()
