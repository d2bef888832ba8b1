"""The response cache: its key, the memory backend, and the turn runner's use of it."""

from __future__ import annotations

import time

import pytest
from flask import Flask

from chatapp import ChatApp, create_app
from chatapp.broker.base import Message
from chatapp.broker.memory import MemoryBroker
from chatapp.cache import CachedReply, MemoryResponseCache, ResponseCache, cache_key
from chatapp.errors import ProviderError
from chatapp.providers.base import Completion, Provider
from chatapp.turns import TurnRunner
from tests.support.fakes import ScriptedProvider
from tests.support.servers import FAST, ServerFactory

# -- the key ------------------------------------------------------------------------------


def m(role: str, content: str, id: str = "x") -> Message:
    return Message(id, role, content)


BASE = ("gpt", "Be brief.", (m("user", "hi"), m("assistant", "hello")), "and now?")


@pytest.mark.parametrize(
    "changed",
    [
        ("gpt-2", *BASE[1:]),
        (BASE[0], "Be long.", *BASE[2:]),
        (BASE[0], BASE[1], (m("user", "hi"),), BASE[3]),
        (BASE[0], BASE[1], (m("assistant", "hello"), m("user", "hi")), BASE[3]),
        (BASE[0], BASE[1], (m("user", "hi"), m("user", "hello")), BASE[3]),
        (*BASE[:3], "and now? "),
        # No ambiguity at the seams between the parts.
        (BASE[0], BASE[1] + "and now?", BASE[2], ""),
        (BASE[0], BASE[1], (m("user", "hi"), m("assistant", "hello"), m("user", "and now?")), ""),
    ],
)
def test_key_changes_with_every_part(changed: tuple) -> None:
    assert cache_key(*changed) != cache_key(*BASE)


def test_key_is_stable_and_ignores_message_ids() -> None:
    key = cache_key(*BASE)
    assert len(key) == 64 and int(key, 16) >= 0
    other_ids = (BASE[0], BASE[1], (m("user", "hi", "id-1"), m("assistant", "hello", "id-2")), BASE[3])
    assert cache_key(*other_ids) == key
    # A known value: the canonical JSON must not drift by accident, or a shared cache
    # would miss on every entry the previous version wrote.
    assert cache_key("m", "S", (m("user", "hi"),), "ß ✓ 👍") == "6effe7c556f814d7fba214bdcfe35830ed49367aba55d0918efa8a334c80d37d"
    # The scope (an owner) is part of the key.
    assert cache_key(*BASE, scope="alice") not in (key, cache_key(*BASE, scope="bob"))
    # A lone surrogate still hashes.
    assert cache_key("m", "", (), "a\ud800b") != cache_key("m", "", (), "ab")


# -- the memory backend ---------------------------------------------------------------------


REPLY: CachedReply = {"pieces": ["Hel", "lo ✓\n"], "finish_reason": "stop", "usage": {"total_tokens": 3}}


def test_memory_round_trip_gives_copies() -> None:
    cache = MemoryResponseCache()
    assert cache.get("k") is None
    cache.put("k", REPLY, 60)
    got = cache.get("k")
    assert got == REPLY
    got["pieces"].append("tampered")
    assert cache.get("k") == REPLY


def test_memory_expiry_and_zero_ttl() -> None:
    cache = MemoryResponseCache()
    cache.put("short", REPLY, 0.05)
    cache.put("never", REPLY, 0)
    assert cache.get("never") is None
    time.sleep(0.1)
    assert cache.get("short") is None


def test_memory_evicts_the_least_recently_used() -> None:
    cache = MemoryResponseCache(max_entries=2)
    cache.put("a", REPLY, 60)
    cache.put("b", REPLY, 60)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", REPLY, 60)
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    with pytest.raises(ValueError):
        MemoryResponseCache(max_entries=0)


# -- the turn runner -------------------------------------------------------------------------


class BrokenCache(ResponseCache):
    """A backend that is down: every call raises."""

    def get(self, key: str) -> CachedReply | None:
        raise ConnectionError("cache down")

    def put(self, key: str, reply: CachedReply, ttl_seconds: float) -> None:
        raise ConnectionError("cache down")


def turn(runner: TurnRunner, text: str = "same question") -> list[tuple[str, dict]]:
    """Run one turn in a new session and return its events."""
    session_id = runner.broker.create_session("alice")
    runner.run(runner.broker.begin_turn(session_id, text))
    return [(e.event, e.payload()) for e in runner.broker.read(session_id, None, 0)]


def runner_for(provider: Provider, cache: ResponseCache | None, ttl: float = 60, scope: str = "global") -> TurnRunner:
    return TurnRunner(MemoryBroker(), provider, model="", system_prompt="S", cache=cache, cache_ttl_seconds=ttl, cache_scope=scope)


def test_hit_replays_without_calling_the_provider() -> None:
    provider = ScriptedProvider(["Hel", "lo ✓\n", Completion("stop", {"total_tokens": 3})])
    runner = runner_for(provider, MemoryResponseCache())
    first = turn(runner)
    second = turn(runner)
    assert len(provider.requests) == 1
    assert first[0][1]["cached"] is False and second[0][1]["cached"] is True
    assert [e for e in second[1:] if e[0] == "token"] == [e for e in first[1:] if e[0] == "token"]
    assert [name for name, _ in second] == ["start", "token", "token", "end"]
    assert second[-1][1]["finish_reason"] == "stop" and second[-1][1]["usage"] == {"total_tokens": 3}
    # The replayed reply joins history like any other.
    session_id = runner.broker.create_session("bob")
    runner.run(runner.broker.begin_turn(session_id, "same question"))
    assert runner.broker.get_session(session_id).messages[-1].content == "Hello ✓\n"
    # A different question is a miss.
    turn(runner, "another question")
    assert len(provider.requests) == 2


def test_by_default_a_reply_is_replayed_to_its_own_owner_only() -> None:
    provider = ScriptedProvider(["Hel", "lo", Completion("stop", None)])
    runner = runner_for(provider, MemoryResponseCache(), scope="owner")
    assert turn(runner)[0][1]["cached"] is False
    # Another owner asking the same learns nothing: the upstream answers again.
    session_id = runner.broker.create_session("mallory")
    runner.run(runner.broker.begin_turn(session_id, "same question"))
    assert runner.broker.read(session_id, None, 0)[0].payload()["cached"] is False
    assert len(provider.requests) == 2
    # The owner asking again gets the replay.
    assert turn(runner)[0][1]["cached"] is True
    assert len(provider.requests) == 2


def test_the_memory_cache_is_bounded_in_bytes() -> None:
    cache = MemoryResponseCache(max_bytes=1000)
    big: CachedReply = {"pieces": ["x" * 400], "finish_reason": "stop", "usage": None}
    for index in range(5):
        cache.put(f"k{index}", big, 60)
    assert cache.bytes <= 1000
    assert cache.get("k0") is None and cache.get("k4") is not None
    # One reply larger than the whole budget is not kept at all.
    cache.put("huge", {"pieces": ["é" * 400], "finish_reason": "stop", "usage": None}, 60)
    assert cache.get("huge") is None and cache.bytes <= 1000


@pytest.mark.parametrize(
    "script",
    [
        ["part", ProviderError("down")],
        ["part", RuntimeError("bug")],
        ["part", "<cancel>", "more"],
        ["part", Completion("length", None)],
        [Completion("stop", None)],
    ],
    ids=["provider-error", "unexpected-error", "cancelled", "length", "empty"],
)
def test_only_complete_replies_are_stored(script: list) -> None:
    provider = ScriptedProvider(script)
    runner = runner_for(provider, MemoryResponseCache())
    turn(runner)
    second = turn(runner)
    assert len(provider.requests) == 2
    assert second[0][1]["cached"] is False


def test_ttl_zero_disables_and_a_broken_cache_costs_nothing_but_calls() -> None:
    provider = ScriptedProvider(["ok", Completion("stop", None)])
    disabled = runner_for(provider, MemoryResponseCache(), ttl=0)
    assert disabled.cache is None
    turn(disabled), turn(disabled)
    assert len(provider.requests) == 2

    provider = ScriptedProvider(["ok", Completion("stop", None)])
    broken = runner_for(provider, BrokenCache())
    events = turn(broken)
    assert [name for name, _ in events] == ["start", "token", "end"] and events[-1][1]["finish_reason"] == "stop"
    turn(broken)
    assert len(provider.requests) == 2


def test_an_unreadable_entry_is_a_miss() -> None:
    provider = ScriptedProvider(["fresh", Completion("stop", None)])
    cache = MemoryResponseCache()
    runner = runner_for(provider, cache)
    history = (Message("x", "user", "same question"),)
    key = cache_key(runner.model, "S", history[:-1], "same question")
    cache.put(key, {"pieces": "not a list", "finish_reason": "stop", "usage": None}, 60)  # type: ignore[typeddict-item]
    events = turn(runner)
    assert len(provider.requests) == 1 and events[0][1]["cached"] is False
    assert [d["text"] for name, d in events if name == "token"] == ["fresh"]


# -- configuration -------------------------------------------------------------------------


def test_the_app_builds_the_cache_from_settings() -> None:
    assert isinstance(create_app().extensions["chatapp"].cache, MemoryResponseCache)
    disabled = create_app({"CHATAPP_CACHE_TTL_SECONDS": "0"}).extensions["chatapp"]
    assert disabled.cache is None and disabled.runner.cache is None
    mine = MemoryResponseCache(max_entries=5)
    app = Flask("host")
    app.secret_key = "host secret"
    ChatApp(app, cache=mine)
    assert app.extensions["chatapp"].cache is mine and app.extensions["chatapp"].runner.cache is mine


def test_a_repeated_conversation_is_cached_through_the_api() -> None:
    app = create_app({"TESTING": True, "CHATAPP_DEMO_DELAY_MS": 0, "CHATAPP_DEMO_REPLY_WORDS": 4})
    client = app.test_client()
    starts = []
    for _ in range(2):
        session_id = client.post("/api/sessions", json={}).get_json()["session_id"]
        client.post(f"/api/sessions/{session_id}/messages", json={"message": "cache me"})
        deadline = time.monotonic() + 10
        while client.get(f"/api/sessions/{session_id}").get_json()["generating"] and time.monotonic() < deadline:
            time.sleep(0.01)
        body = client.get(f"/api/sessions/{session_id}/stream").get_data(as_text=True)
        starts.append(body.split("event: start\n", 1)[1].split("\n\n", 1)[0])
    assert '"cached":false' in starts[0] and '"cached":true' in starts[1]


# -- every backend ---------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> ResponseCache:
    if request.param == "memory":
        return MemoryResponseCache()
    from chatapp.cache.redis import RedisResponseCache

    server = request.getfixturevalue("redis_server")
    server.client().flushall()
    return RedisResponseCache(server.client())


def test_backend_round_trip_and_expiry(backend: ResponseCache) -> None:
    assert backend.get("k") is None
    backend.put("k", REPLY, 60)
    assert backend.get("k") == REPLY
    backend.put("short", REPLY, 0.05)
    backend.put("never", REPLY, 0)
    time.sleep(0.2)
    assert backend.get("short") is None and backend.get("never") is None
    assert backend.get("k") == REPLY


def test_redis_cache_down_is_a_miss_not_a_failure(tmp_path) -> None:
    from chatapp.cache.redis import RedisResponseCache
    from tests.support.redis_server import RedisServer

    own = RedisServer(tmp_path)
    cache = RedisResponseCache(own.client())
    cache.put("k", REPLY, 60)
    own.stop()
    assert cache.get("k") is None
    cache.put("k2", REPLY, 60)


def test_the_app_uses_redis_for_the_cache_with_a_redis_broker(redis_server) -> None:
    from chatapp.cache.redis import RedisResponseCache

    state = create_app({"CHATAPP_REDIS_URL": redis_server.url}).extensions["chatapp"]
    assert isinstance(state.cache, RedisResponseCache)
    assert state.cache.client is state.broker.client
    state.broker.close()


@pytest.mark.parametrize(("scope", "second_cached"), [(None, False), ("global", True)])
def test_two_owners_asking_the_same_first_question(start_server: ServerFactory, scope: str | None, second_cached: bool) -> None:
    """By default the second owner is not told (by a replay) that someone asked that."""
    server = start_server({**FAST, **({"CHATAPP_CACHE_SCOPE": scope} if scope else {})})
    cached = []
    for _ in range(2):
        with server.client() as owner:
            session_id = owner.new_session()
            owner.send_message(session_id, "what did my neighbour ask?")
            with owner.open_stream(session_id) as stream:
                cached.append(stream.until_end()[0].json()["cached"])
    assert cached == [False, second_cached]
