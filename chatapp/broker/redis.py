"""The Redis broker: sessions, history and event logs shared by every worker and host.

Keys of one session share the hash tag ``{<session id>}``, so every Lua script touches
one slot and the design holds on Redis Cluster::

    chatapp:{sid}:meta      hash    owner, turn (running turn's reply id or ""),
                                    after (last event id before the current turn),
                                    prev (the same for the previous turn)
    chatapp:{sid}:messages  list    history, one JSON message each
    chatapp:{sid}:events    stream  the previous and the current turn's events
    chatapp:{sid}:alive     string  set by the running producer, expires in seconds
    chatapp:{sid}:cancel    string  the reply id whose turn should stop
    chatapp:streams:<owner> zset    an owner's open streams on every host, by lease end
    chatapp:owner:<owner>   zset    an owner's session ids (by creation time); ids
                                    whose session expired leave it when counted

All of a session's keys expire after ``CHATAPP_SESSION_TTL_SECONDS`` without activity.

**Events.** A producer writes a batch of events as one stream entry: fields ``n``,
``e0``/``d0``, ``e1``/``d1``... The entry's id is the id of its last event, and the
events of an entry take consecutive sequence numbers, so every event keeps its own
``<ms>-<seq>`` id while Redis sees one command per batch, not per token. ``XREAD`` after
any event id returns the entry holding later events of the same batch too; the reader
drops what it has seen.

**Wake-ups.** Each worker process holds one pattern subscription to
``chatapp:*:notify``. Producers publish after each write; the worker's listener wakes
its local readers, which then read the stream from pooled connections. So a worker holds
a few Redis connections whatever the number of open streams, and nothing polls.

**Liveness.** The producer refreshes the ``alive`` key while it runs. A reader that has
waited a liveness period with no events, while the session says a turn runs and the key
is gone, appends ``error``/``generation_interrupted`` and ``end`` through a script that
does so at most once, so two readers on two hosts cannot both append.

The entries and wake-ups are in :mod:`.redis_log`, the atomic steps in :mod:`.redis_scripts`.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..errors import ConflictError, ServiceUnavailableError, SessionNotFoundError
from . import redis_scripts as scripts
from .base import HISTORY_FULL, Broker, Event, Message, Reader, SessionInfo, TurnHandle, parse_event_id
from .redis_log import (
    LIVENESS_SECONDS,
    READ_COUNT,
    Producer,
    Waiters,
    decode_entry,
    owner_key,
    session_keys,
    streams_key,
)

try:
    import redis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ReadOnlyError, RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("The Redis broker needs redis-py: pip install 'chatapp[redis]'") from exc

__all__ = ["RedisBroker"]

log = logging.getLogger("chatapp.broker.redis")

T = TypeVar("T")

#: Failures that mean "Redis cannot be reached right now" (503), as opposed to a bug.
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)


class _RedisReader(Reader):
    """A reader registered for wake-ups from open to close, so it reads Redis only
    after a publish, once per batch, rather than once on every call."""

    def __init__(self, broker: RedisBroker, session_id: str) -> None:
        super().__init__(broker, session_id)
        self._broker = broker
        self._woken = threading.Event()
        # The first read always looks: something may have come before registering.
        self._woken.set()
        broker._waiters.add(session_id, self._woken)

    def read(self, after: str | None, timeout: float) -> list[Event]:
        return self._broker._read_woken(self.session_id, after, timeout, self._woken)

    def close(self) -> None:
        self._broker._waiters.discard(self.session_id, self._woken)


class RedisBroker(Broker):
    name = "redis"

    def __init__(self, url: str, *, session_ttl_seconds: int = 86_400, client: redis.Redis | None = None) -> None:
        # One pool per process for every reader and producer: a blocking pool makes a
        # burst wait for a free connection instead of failing or opening thousands.
        self.client = client or redis.Redis(
            connection_pool=redis.BlockingConnectionPool.from_url(
                url,
                max_connections=64,
                timeout=5,
                socket_timeout=10,
                socket_connect_timeout=2,
                health_check_interval=30,
            )
        )
        # Milliseconds, for PEXPIRE: a session untouched this long (and with no turn
        # running, whose producer keeps it alive) is gone.
        self._ttl = int(session_ttl_seconds * 1000)
        self._waiters = Waiters(self.client)
        self._producers: dict[str, Producer] = {}
        self._begin = self.client.register_script(scripts.BEGIN)
        self._finish = self.client.register_script(scripts.FINISH)
        self._interrupt = self.client.register_script(scripts.INTERRUPT)
        self._hold_stream = self.client.register_script(scripts.HOLD_STREAM)
        self._renew_stream = self.client.register_script(scripts.RENEW_STREAM)

    def _call(self, operation: Callable[[], T]) -> T:
        """Run one Redis operation, translating an outage into a 503 for callers."""
        try:
            return operation()
        except _UNAVAILABLE as exc:
            log.warning("redis unavailable: %s", exc)
            raise ServiceUnavailableError("The chat store is unavailable; try again shortly.") from exc

    # -- sessions ---------------------------------------------------------------------

    def create_session(self, owner: str) -> str:
        session_id = secrets.token_urlsafe(16)
        keys = session_keys(session_id)
        now = time.time()

        def create() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(keys["meta"], mapping={"owner": owner, "turn": "", "after": "0-0", "prev": "0-0", "created": now})
            pipe.pexpire(keys["meta"], self._ttl)
            index = owner_key(owner)
            pipe.zadd(index, {session_id: now})
            pipe.pexpire(index, self._ttl)
            pipe.execute()

        self._call(create)
        return session_id

    def get_session(self, session_id: str) -> SessionInfo | None:
        keys = session_keys(session_id)

        def fetch() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(keys["meta"], "owner", "turn")
            pipe.lrange(keys["messages"], 0, -1)
            for name in ("meta", "messages", "events"):
                pipe.pexpire(keys[name], self._ttl)
            return pipe.execute()

        (owner, turn), raw_messages, *_ = self._call(fetch)
        if owner is None:
            return None
        # The owner's index lives as long as the owner's newest-used session.
        self._call(lambda: self.client.pexpire(owner_key(owner.decode()), self._ttl))
        messages = tuple(Message(**json.loads(m)) for m in raw_messages)
        return SessionInfo(session_id, owner.decode(), messages, bool(turn))

    def delete_session(self, session_id: str) -> bool:
        keys = session_keys(session_id)

        def delete() -> bool:
            owner = self.client.hget(keys["meta"], "owner")
            pipe = self.client.pipeline(transaction=False)
            pipe.publish(keys["notify"], "c")
            pipe.delete(keys["meta"], keys["messages"], keys["events"], keys["alive"], keys["cancel"])
            if owner is not None:
                pipe.zrem(owner_key(owner.decode()), session_id)
            pipe.publish(keys["notify"], "e")
            return bool(pipe.execute()[1])

        return self._call(delete)

    def count_sessions(self, owner: str) -> int:
        """The owner's sessions that still exist; expired ones leave the index here."""
        index = owner_key(owner)

        def count() -> int:
            members = self.client.zrange(index, 0, -1)
            if not members:
                return 0
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.exists(session_keys(member.decode())["meta"])
            gone = [m for m, exists in zip(members, pipe.execute()) if not exists]
            if gone:
                self.client.zrem(index, *gone)
            return len(members) - len(gone)

        return self._call(count)

    # -- turns ------------------------------------------------------------------------

    def begin_turn(self, session_id: str, text: str, *, max_messages: int | None = None) -> TurnHandle:
        keys = session_keys(session_id)
        user = Message(_message_id(), "user", text)
        reply_id = _message_id()
        result = self._call(
            lambda: self._begin(
                keys=[keys["meta"], keys["messages"], keys["events"], keys["alive"], keys["cancel"]],
                args=[json.dumps(user.to_dict()), reply_id, self._ttl, int(LIVENESS_SECONDS * 1000), max_messages or 0],
            )
        )
        result = result.decode()
        if result == "missing":
            raise SessionNotFoundError()
        if result == "conflict":
            raise ConflictError()
        if result == "full":
            raise ConflictError(HISTORY_FULL.format(max_messages), code="history_full")
        session = self.get_session(session_id)
        if session is None:
            raise SessionNotFoundError()
        turn = TurnHandle(session_id, reply_id, session.messages)
        self._waiters.start()
        self._waiters.watch_turn(turn)
        self._producers[reply_id] = Producer(self, turn, result, session.owner)
        return turn

    def publish(self, turn: TurnHandle, events: Sequence[tuple[str, str]]) -> None:
        producer = self._producers.get(turn.message_id)
        if producer is not None:
            producer.add(events)

    def finish_turn(self, turn: TurnHandle, reply: str, events: Sequence[tuple[str, str]]) -> None:
        producer = self._producers.pop(turn.message_id, None)
        self._waiters.unwatch_turn(turn)
        if producer is None:
            return
        producer.close()
        keys = session_keys(turn.session_id)
        entry_id, fields = producer.entry(events)
        message = json.dumps(Message(turn.message_id, "assistant", reply).to_dict()) if reply else ""
        self._call(
            lambda: self._finish(
                keys=[keys["meta"], keys["messages"], keys["events"], keys["alive"], keys["cancel"], keys["notify"]],
                args=[turn.message_id, message, entry_id, json.dumps(fields), self._ttl],
            )
        )

    def request_cancel(self, session_id: str) -> bool:
        keys = session_keys(session_id)

        def cancel() -> bool:
            owner, turn = self.client.hmget(keys["meta"], "owner", "turn")
            if owner is None:
                raise SessionNotFoundError()
            if not turn:
                return False
            pipe = self.client.pipeline(transaction=False)
            pipe.set(keys["cancel"], turn, px=self._ttl)
            pipe.publish(keys["notify"], "c")
            pipe.execute()
            return True

        return self._call(cancel)

    # -- stream slots -----------------------------------------------------------------

    def hold_stream(self, owner: str, limit: int | None, lease_seconds: float) -> str | None:
        token = secrets.token_hex(8)
        held = self._call(
            lambda: self._hold_stream(keys=[streams_key(owner)], args=[limit or 0, int(lease_seconds * 1000), token])
        )
        return token if held else None

    def renew_stream(self, owner: str, token: str, lease_seconds: float) -> None:
        try:
            self._renew_stream(keys=[streams_key(owner)], args=[int(lease_seconds * 1000), token])
        except RedisError as exc:
            log.warning("stream slot not renewed: %s", type(exc).__name__)

    def release_stream(self, owner: str, token: str) -> None:
        try:
            self.client.zrem(streams_key(owner), token)
        except RedisError as exc:
            # The lease lapses by itself.
            log.warning("stream slot not released: %s", type(exc).__name__)

    # -- readers ----------------------------------------------------------------------

    def reader(self, session_id: str) -> Reader:
        return _RedisReader(self, session_id)

    def read(self, session_id: str, after: str | None, timeout: float) -> list[Event]:
        reader = _RedisReader(self, session_id)
        try:
            return reader.read(after, timeout)
        finally:
            reader.close()

    def _read_woken(self, session_id: str, after: str | None, timeout: float, woken: threading.Event) -> list[Event]:
        """Read the stream only when ``woken`` says something was published."""
        self._waiters.start()
        deadline = time.monotonic() + timeout
        check_every = LIVENESS_SECONDS
        while True:
            if woken.is_set():
                # Cleared before reading, so a publish during the read wakes us again.
                woken.clear()
                events, after, full = self._read_now(session_id, after)
                if full:
                    # A full read may have left entries behind: the next read looks again.
                    woken.set()
                if events:
                    return events
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            # While a turn runs, wake once a liveness period to notice a dead producer.
            if not woken.wait(min(remaining, check_every)) and not self._check_producer(session_id):
                check_every = timeout

    def backlog(self, session_id: str, after: str | None) -> list[Event]:
        if after is not None:
            prev = self._call(lambda: self.client.hget(session_keys(session_id)["meta"], "prev"))
            if prev is not None and parse_event_id(after) <= parse_event_id(prev.decode()):
                # Older than everything kept: the latest turn from its start.
                after = None
        return self.read(session_id, after, 0)

    def _read_now(self, session_id: str, after: str | None) -> tuple[list[Event], str, bool]:
        """The events after ``after``, where they started, and whether the read was full."""
        keys = session_keys(session_id)

        def fetch() -> tuple[str, Any]:
            start = after
            if start is None:
                meta = self.client.hget(keys["meta"], "after")
                if meta is None:
                    raise SessionNotFoundError()
                start = meta.decode()
            streams = self.client.xread({keys["events"]: start}, count=READ_COUNT)
            # A deleted or expired session has no stream; ask only when nothing came.
            if not streams and not self.client.exists(keys["meta"]):
                raise SessionNotFoundError()
            return start, streams

        start, streams = self._call(fetch)
        events: list[Event] = []
        start_key = parse_event_id(start)
        count = 0
        for _, entries in streams or ():
            count += len(entries)
            for entry_id, fields in entries:
                events.extend(decode_entry(entry_id.decode(), fields, start_key))
        return events, start, count >= READ_COUNT

    def _check_producer(self, session_id: str) -> bool:
        """Whether a turn is running; ends it for everyone when its producer is gone."""
        keys = session_keys(session_id)

        def check() -> bool:
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(keys["meta"], "turn")
            pipe.exists(keys["alive"])
            turn, alive = pipe.execute()
            if not turn or alive:
                return bool(turn)
            turn_id = turn.decode()
            partial = self._partial_reply(session_id)
            error = json.dumps(
                {"code": "generation_interrupted", "message": "The reply was interrupted; please try again.", "retryable": True},
                separators=(",", ":"),
            )
            end = json.dumps({"message_id": "__ID__", "finish_reason": "error", "usage": None}, separators=(",", ":"))
            self._interrupt(
                keys=[keys["meta"], keys["messages"], keys["events"], keys["alive"], keys["cancel"], keys["notify"]],
                args=[turn_id, json.dumps({"role": "assistant", "content": partial}), error, end],
            )
            return False

        return self._call(check)

    def _partial_reply(self, session_id: str) -> str:
        keys = session_keys(session_id)
        start = self.client.hget(keys["meta"], "after")
        if start is None:
            return ""
        entries = self.client.xrange(keys["events"], b"(" + start, "+")
        pieces = []
        for entry_id, fields in entries:
            for event in decode_entry(entry_id.decode(), fields, (0, 0)):
                if event.event == "token":
                    pieces.append(event.payload().get("text", ""))
        return "".join(pieces)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except RedisError:
            return False

    def close(self) -> None:
        self._waiters.stop()
        self.client.close()


def _message_id() -> str:
    return "msg_" + secrets.token_urlsafe(12)
