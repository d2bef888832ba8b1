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
from .base import HISTORY_FULL, Broker, Event, Message, Reader, SessionInfo, TurnHandle, parse_event_id

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

_NOTIFY_PATTERN = "chatapp:*:notify"
#: How long a producer's liveness key lives; it is refreshed three times as often.
LIVENESS_SECONDS = 3.0
#: At most one write of a turn's events per this many seconds: at full speed tokens
#: gather into batches; a token after a quiet spell still goes out at once.
_MIN_WRITE_INTERVAL = 0.002
#: The most events one stream entry holds; more are split over several entries.
_BATCH_MAX = 128
#: Entries per read: at most 1,024 events, so a reader owed a long reply gets it in
#: parts and never holds Events for all of it at once.
_READ_COUNT = 8
# The field names of an entry's events, made once rather than per event.
_NAME_FIELDS = [f"e{i}" for i in range(_BATCH_MAX)]
_DATA_FIELDS = [f"d{i}" for i in range(_BATCH_MAX)]
_NAME_KEYS = [name.encode() for name in _NAME_FIELDS]
_DATA_KEYS = [name.encode() for name in _DATA_FIELDS]

# Open a turn: refuse when one runs; store the user's message; trim the log to the
# previous turn; remember where the new turn starts.
_BEGIN = """
local meta, messages, events = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', meta) == 0 then return 'missing' end
if redis.call('HGET', meta, 'turn') ~= '' then return 'conflict' end
local limit = tonumber(ARGV[5])
if limit > 0 and redis.call('LLEN', messages) + 2 > limit then return 'full' end
local prev = redis.call('HGET', meta, 'after') or '0-0'
local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
local after = '0-0'
if #last > 0 then after = last[1][1] end
if prev ~= '0-0' then
  local first = redis.call('XRANGE', events, '(' .. prev, '+', 'COUNT', 1)
  if #first > 0 then redis.call('XTRIM', events, 'MINID', first[1][1]) end
end
redis.call('RPUSH', messages, ARGV[1])
redis.call('HSET', meta, 'turn', ARGV[2], 'prev', prev, 'after', after)
redis.call('DEL', KEYS[5])
redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[4])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
return after
"""

# Close the turn: only the producer that owns it may; append the reply and the closing
# entry in the same step, so a reader that sees `end` can post its next message at once.
_FINISH = """
local meta, messages, events = KEYS[1], KEYS[2], KEYS[3]
if redis.call('HGET', meta, 'turn') ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('RPUSH', messages, ARGV[2]) end
local fields = cjson.decode(ARGV[4])
redis.call('XADD', events, ARGV[3], unpack(fields))
redis.call('HSET', meta, 'turn', '')
redis.call('DEL', KEYS[4], KEYS[5])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
redis.call('PUBLISH', KEYS[6], 'e')
return 1
"""

# A reader found the producer gone: end the turn once, with ids after the last entry.
_INTERRUPT = """
local meta, messages, events = KEYS[1], KEYS[2], KEYS[3]
local turn = redis.call('HGET', meta, 'turn')
if turn == false or turn == '' or turn ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = 0
local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
if #last > 0 then
  local lms, lseq = string.match(last[1][1], '(%d+)-(%d+)')
  lms, lseq = tonumber(lms), tonumber(lseq)
  if lms >= ms then ms = lms; seq = lseq + 1 end
end
local end_id = ms .. '-' .. (seq + 1)
local reply = cjson.decode(ARGV[2])
reply['id'] = turn
if reply['content'] ~= '' then redis.call('RPUSH', messages, cjson.encode(reply)) end
local error_data = ARGV[3]
local end_data = string.gsub(ARGV[4], '__ID__', turn)
redis.call('XADD', events, end_id, 'n', 2, 'e0', 'error', 'd0', error_data, 'e1', 'end', 'd1', end_data)
redis.call('HSET', meta, 'turn', '')
redis.call('DEL', KEYS[5])
redis.call('PUBLISH', KEYS[6], 'e')
return 1
"""


# Take a stream slot of an owner if fewer than the limit are held; lapsed leases (a
# worker killed with its streams open) no longer count. Redis's clock, one for all hosts.
_HOLD_STREAM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit = tonumber(ARGV[1])
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_RENEW_STREAM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


def _keys(session_id: str) -> dict[str, str]:
    tag = f"chatapp:{{{session_id}}}"
    return {
        "meta": f"{tag}:meta",
        "messages": f"{tag}:messages",
        "events": f"{tag}:events",
        "alive": f"{tag}:alive",
        "cancel": f"{tag}:cancel",
        "notify": f"{tag}:notify",
    }


def _owner_key(owner: str) -> str:
    return f"chatapp:owner:{owner}"


def _streams_key(owner: str) -> str:
    return f"chatapp:streams:{owner}"


def _session_of(channel: str) -> str | None:
    start, end = channel.find("{"), channel.find("}")
    return channel[start + 1 : end] if 0 <= start < end else None


class _Waiters:
    """The wake-up flags of this process's readers, set through one pattern subscription."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._readers: dict[str, set[threading.Event]] = {}
        self._turns: dict[str, TurnHandle] = {}
        self._lock = threading.Lock()
        self._started = False
        self._ready = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the listener on first use, in the process that uses it (after fork)."""
        if self._started:
            return
        with self._lock:
            if self._started:
                return
            self._started = True
        self._thread = threading.Thread(target=self._listen, daemon=True, name="chatapp-redis-notify")
        self._thread.start()
        # Readers must not miss a wake-up sent before the subscription took effect.
        self._ready.wait(5)

    def add(self, session_id: str, woken: threading.Event) -> None:
        with self._lock:
            self._readers.setdefault(session_id, set()).add(woken)

    def discard(self, session_id: str, woken: threading.Event) -> None:
        with self._lock:
            readers = self._readers.get(session_id)
            if readers is not None:
                readers.discard(woken)
                if not readers:
                    del self._readers[session_id]

    def wake(self, session_id: str) -> None:
        with self._lock:
            readers = list(self._readers.get(session_id, ()))
        for woken in readers:
            woken.set()

    def wake_all(self) -> None:
        with self._lock:
            readers = [woken for group in self._readers.values() for woken in group]
        for woken in readers:
            woken.set()

    def watch_turn(self, turn: TurnHandle) -> None:
        with self._lock:
            self._turns[turn.session_id] = turn

    def unwatch_turn(self, turn: TurnHandle) -> None:
        with self._lock:
            if self._turns.get(turn.session_id) is turn:
                del self._turns[turn.session_id]

    def _cancel(self, session_id: str) -> None:
        turn = self._turns.get(session_id)
        if turn is not None:
            turn.cancelled.set()

    def _listen(self) -> None:
        pubsub = self._client.pubsub()
        backoff = 0.1
        while not self._stopped:
            try:
                if not pubsub.patterns:
                    pubsub.psubscribe(_NOTIFY_PATTERN)
                message = pubsub.get_message(timeout=0.25)
                backoff = 0.1
            except (RedisError, OSError, ValueError) as exc:
                if self._stopped:
                    break
                log.warning("notification channel lost (%s); retrying", type(exc).__name__)
                self._ready.clear()
                # Whatever was published meanwhile is lost: let every reader look again.
                self.wake_all()
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if message is None:
                continue
            kind = message["type"]
            if kind == "psubscribe":
                self._ready.set()
                self.wake_all()
            elif kind == "pmessage":
                session_id = _session_of(message["channel"].decode())
                if session_id is None:
                    continue
                if message["data"] == b"c":
                    self._cancel(session_id)
                else:
                    self.wake(session_id)
        pubsub.close()

    def stop(self) -> None:
        self._stopped = True
        if self._thread is not None:
            self._thread.join(3)


class _Producer:
    """Batches one turn's events: what arrives while a write is in flight goes next."""

    def __init__(self, broker: RedisBroker, turn: TurnHandle, after: str, owner: str) -> None:
        self.broker = broker
        self.turn = turn
        self.keys = _keys(turn.session_id)
        self.owner_key = _owner_key(owner)
        self.last = parse_event_id(after)
        self.pending: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.wanted = threading.Event()
        self.done = threading.Event()
        self.idle = threading.Event()
        self.idle.set()
        self.failed: BaseException | None = None
        threading.Thread(target=self._run, daemon=True, name="chatapp-redis-producer").start()

    def ids(self, count: int) -> list[str]:
        """``count`` consecutive ids after the last one, in the current millisecond."""
        ms = time.time_ns() // 1_000_000
        last_ms, last_seq = self.last
        ms, seq = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        self.last = (ms, seq + count - 1)
        return [f"{ms}-{seq + i}" for i in range(count)]

    def add(self, events: Sequence[tuple[str, str]]) -> None:
        if self.failed is not None:
            raise ServiceUnavailableError("The event log cannot be written.")
        with self.lock:
            self.pending.extend(events)
            self.idle.clear()
        self.wanted.set()

    def entry(self, events: Sequence[tuple[str, str]]) -> tuple[str, list[Any]]:
        ids = self.ids(len(events))
        fields: list[Any] = ["n", str(len(events))]
        for index, (name, data) in enumerate(events):
            fields += [_NAME_FIELDS[index], name, _DATA_FIELDS[index], data]
        return ids[-1], fields

    def _run(self) -> None:
        client = self.broker.client
        # Often enough for the liveness key and for the session's own expiry.
        refresh_every = min(LIVENESS_SECONDS, self.broker._ttl / 1000) / 3
        refreshed = 0.0
        while True:
            self.wanted.wait(refresh_every)
            self.wanted.clear()
            with self.lock:
                batch, self.pending = self.pending, []
            finishing = self.done.is_set()
            now = time.monotonic()
            refresh = not finishing and now - refreshed >= refresh_every
            try:
                if batch or refresh:
                    pipe = client.pipeline(transaction=False)
                    for start in range(0, len(batch), _BATCH_MAX):
                        entry_id, fields = self.entry(batch[start : start + _BATCH_MAX])
                        pipe.execute_command("XADD", self.keys["events"], entry_id, *fields)
                    if batch:
                        pipe.publish(self.keys["notify"], "e")
                    if refresh:
                        # The keeper's beat: prove this producer lives; learn of a cancel
                        # made on a host whose notification did not reach us.
                        pipe.set(self.keys["alive"], self.turn.message_id, px=int(LIVENESS_SECONDS * 1000))
                        # A running turn keeps its session from expiring.
                        for key in (self.keys["meta"], self.keys["messages"], self.keys["events"], self.owner_key):
                            pipe.pexpire(key, self.broker._ttl)
                        pipe.get(self.keys["cancel"])
                        refreshed = now
                    results = pipe.execute()
                    if refresh and results[-1] is not None and results[-1].decode() == self.turn.message_id:
                        self.turn.cancelled.set()
            except RedisError as exc:
                # Includes a refused XADD id: readers declared this producer dead.
                log.warning("turn %s: event log write failed: %s", self.turn.message_id, exc)
                self.failed = exc
                self.turn.cancelled.set()
            with self.lock:
                if not self.pending or self.failed is not None:
                    self.idle.set()
            if self.failed is not None or (finishing and self.idle.is_set()):
                return
            if batch and not finishing:
                time.sleep(_MIN_WRITE_INTERVAL)

    def close(self) -> None:
        """Wait until everything added is written, then stop."""
        self.done.set()
        self.wanted.set()
        self.idle.wait(30)


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
        self._waiters = _Waiters(self.client)
        self._producers: dict[str, _Producer] = {}
        self._begin = self.client.register_script(_BEGIN)
        self._finish = self.client.register_script(_FINISH)
        self._interrupt = self.client.register_script(_INTERRUPT)
        self._hold_stream = self.client.register_script(_HOLD_STREAM)
        self._renew_stream = self.client.register_script(_RENEW_STREAM)

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
        keys = _keys(session_id)
        now = time.time()

        def create() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(keys["meta"], mapping={"owner": owner, "turn": "", "after": "0-0", "prev": "0-0", "created": now})
            pipe.pexpire(keys["meta"], self._ttl)
            index = _owner_key(owner)
            pipe.zadd(index, {session_id: now})
            pipe.pexpire(index, self._ttl)
            pipe.execute()

        self._call(create)
        return session_id

    def get_session(self, session_id: str) -> SessionInfo | None:
        keys = _keys(session_id)

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
        self._call(lambda: self.client.pexpire(_owner_key(owner.decode()), self._ttl))
        messages = tuple(Message(**json.loads(m)) for m in raw_messages)
        return SessionInfo(session_id, owner.decode(), messages, bool(turn))

    def delete_session(self, session_id: str) -> bool:
        keys = _keys(session_id)

        def delete() -> bool:
            owner = self.client.hget(keys["meta"], "owner")
            pipe = self.client.pipeline(transaction=False)
            pipe.publish(keys["notify"], "c")
            pipe.delete(keys["meta"], keys["messages"], keys["events"], keys["alive"], keys["cancel"])
            if owner is not None:
                pipe.zrem(_owner_key(owner.decode()), session_id)
            pipe.publish(keys["notify"], "e")
            return bool(pipe.execute()[1])

        return self._call(delete)

    def count_sessions(self, owner: str) -> int:
        """The owner's sessions that still exist; expired ones leave the index here."""
        index = _owner_key(owner)

        def count() -> int:
            members = self.client.zrange(index, 0, -1)
            if not members:
                return 0
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.exists(_keys(member.decode())["meta"])
            gone = [m for m, exists in zip(members, pipe.execute()) if not exists]
            if gone:
                self.client.zrem(index, *gone)
            return len(members) - len(gone)

        return self._call(count)

    # -- turns ------------------------------------------------------------------------

    def begin_turn(self, session_id: str, text: str, *, max_messages: int | None = None) -> TurnHandle:
        keys = _keys(session_id)
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
        self._producers[reply_id] = _Producer(self, turn, result, session.owner)
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
        keys = _keys(turn.session_id)
        entry_id, fields = producer.entry(events)
        message = json.dumps(Message(turn.message_id, "assistant", reply).to_dict()) if reply else ""
        self._call(
            lambda: self._finish(
                keys=[keys["meta"], keys["messages"], keys["events"], keys["alive"], keys["cancel"], keys["notify"]],
                args=[turn.message_id, message, entry_id, json.dumps(fields), self._ttl],
            )
        )

    def request_cancel(self, session_id: str) -> bool:
        keys = _keys(session_id)

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
            lambda: self._hold_stream(keys=[_streams_key(owner)], args=[limit or 0, int(lease_seconds * 1000), token])
        )
        return token if held else None

    def renew_stream(self, owner: str, token: str, lease_seconds: float) -> None:
        try:
            self._renew_stream(keys=[_streams_key(owner)], args=[int(lease_seconds * 1000), token])
        except RedisError as exc:
            log.warning("stream slot not renewed: %s", type(exc).__name__)

    def release_stream(self, owner: str, token: str) -> None:
        try:
            self.client.zrem(_streams_key(owner), token)
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
            prev = self._call(lambda: self.client.hget(_keys(session_id)["meta"], "prev"))
            if prev is not None and parse_event_id(after) <= parse_event_id(prev.decode()):
                # Older than everything kept: the latest turn from its start.
                after = None
        return self.read(session_id, after, 0)

    def _read_now(self, session_id: str, after: str | None) -> tuple[list[Event], str, bool]:
        """The events after ``after``, where they started, and whether the read was full."""
        keys = _keys(session_id)

        def fetch() -> tuple[str, Any]:
            start = after
            if start is None:
                meta = self.client.hget(keys["meta"], "after")
                if meta is None:
                    raise SessionNotFoundError()
                start = meta.decode()
            streams = self.client.xread({keys["events"]: start}, count=_READ_COUNT)
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
                events.extend(_decode_entry(entry_id.decode(), fields, start_key))
        return events, start, count >= _READ_COUNT

    def _check_producer(self, session_id: str) -> bool:
        """Whether a turn is running; ends it for everyone when its producer is gone."""
        keys = _keys(session_id)

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
        keys = _keys(session_id)
        start = self.client.hget(keys["meta"], "after")
        if start is None:
            return ""
        entries = self.client.xrange(keys["events"], b"(" + start, "+")
        pieces = []
        for entry_id, fields in entries:
            for event in _decode_entry(entry_id.decode(), fields, (0, 0)):
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


def _decode_entry(entry_id: str, fields: dict[bytes, bytes], after: tuple[int, int]) -> list[Event]:
    """The events of one stream entry that come after ``after``."""
    count = int(fields[b"n"])
    ms, last_seq = parse_event_id(entry_id)
    first_seq = last_seq - count + 1
    events = []
    for index in range(max(0, after[1] - first_seq + 1) if after[0] == ms else 0, count):
        if (ms, first_seq + index) <= after:
            continue
        if index < _BATCH_MAX:
            name, data = fields[_NAME_KEYS[index]], fields[_DATA_KEYS[index]]
        else:  # an entry larger than this version writes
            name, data = fields[f"e{index}".encode()], fields[f"d{index}".encode()]
        events.append(Event(f"{ms}-{first_seq + index}", name.decode(), data.decode()))
    return events


def _message_id() -> str:
    return "msg_" + secrets.token_urlsafe(12)
