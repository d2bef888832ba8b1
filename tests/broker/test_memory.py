"""The memory broker's readers: where a read resumes, across turns and trims."""

from __future__ import annotations

from chatapp.broker.memory import MemoryBroker


def _turn(broker: MemoryBroker, session_id: str, words: list[str]) -> None:
    turn = broker.begin_turn(session_id, "hi")
    broker.publish(turn, [("start", "{}")])
    for word in words:
        broker.publish(turn, [("token", f'{{"text":"{word}"}}')])
    broker.finish_turn(turn, "".join(words), [("end", "{}")])


def test_a_reader_resumes_where_it_stopped_across_turns_and_trims() -> None:
    broker = MemoryBroker()
    session_id = broker.create_session("alice")
    reader = broker.reader(session_id)
    seen = []
    after = None
    for words in (["a", "b"], ["c"], ["d", "e", "f"]):
        _turn(broker, session_id, words)
        # The third turn trims the first from the log; positions must still hold.
        while batch := reader.read(after, 0):
            seen += batch
            after = batch[-1].id
    texts = [e.payload().get("text") for e in seen if e.event == "token"]
    assert texts == ["a", "b", "c", "d", "e", "f"]
    ids = [e.id for e in seen]
    assert len(set(ids)) == len(ids) and [broker.read(session_id, None, 0)[-1].id] == ids[-1:]
    # Each event once, in order: every read continued from the one before.
    assert [e.event for e in seen] == ["start", "token", "token", "end", "start", "token", "end", "start", "token", "token", "token", "end"]
    reader.close()


def test_a_reader_asked_for_another_id_reads_after_that_id() -> None:
    broker = MemoryBroker()
    session_id = broker.create_session("alice")
    _turn(broker, session_id, ["a", "b", "c"])
    reader = broker.reader(session_id)
    everything = reader.read(None, 0)
    # Not where the reader stopped: an earlier id (a reconnect with Last-Event-ID).
    assert reader.read(everything[1].id, 0) == everything[2:]
    assert reader.read(everything[-1].id, 0) == []


def test_a_reader_whose_place_was_trimmed_gets_the_latest_turn() -> None:
    broker = MemoryBroker()
    session_id = broker.create_session("alice")
    _turn(broker, session_id, ["old"])
    reader = broker.reader(session_id)
    stale = reader.read(None, 0)[-1].id
    _turn(broker, session_id, ["middle"])
    _turn(broker, session_id, ["new"])
    events = reader.read(stale, 0)
    assert events == broker.read(session_id, stale, 0)
    assert [e.payload().get("text") for e in events if e.event == "token"] == ["new"]


def test_what_it_holds_is_counted_and_given_back() -> None:
    from chatapp.errors import ServiceUnavailableError

    broker = MemoryBroker(max_bytes=200_000)
    ids = [broker.create_session(f"owner{i}") for i in range(3)]
    for session_id in ids:
        for _ in range(3):
            _turn(broker, session_id, ["é" * 1000, " more"])
    held = broker.held
    assert held > 3 * 3 * 2 * 2000
    assert broker.owner_bytes("owner0") > 3 * 2000
    # Past the budget: refused before anything is stored.
    big = MemoryBroker(max_bytes=held)
    session_id = big.create_session("x")
    try:
        big.begin_turn(session_id, "y" * held)
    except ServiceUnavailableError as exc:
        assert exc.code == "server_busy" and exc.retry_after
    else:
        raise AssertionError("a message past the budget was taken")
    assert big.get_session(session_id).messages == ()
    # Deleting gives every byte back, to the process and to the owner.
    for session_id in ids:
        assert broker.delete_session(session_id)
    assert broker.held == 0
    assert broker.owner_bytes("owner0") == 0
