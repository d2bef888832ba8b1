"""The Redis broker's event log: key names, entries, batched writes, wake-ups.

A producer writes the events gathered since its last write as one stream entry (fields
``n``, ``e0``/``d0``, ``e1``/``d1``...); the entry's id is its last event's id and its
events take consecutive sequence numbers. Each worker process holds one pattern
subscription that wakes its local readers. See :mod:`chatapp.broker.redis` for the whole
design.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ..errors import ServiceUnavailableError
from .base import Event, TurnHandle, parse_event_id

if TYPE_CHECKING:
    import redis

    from .redis import RedisBroker

__all__ = [
    "BATCH_MAX", "LIVENESS_SECONDS", "NOTIFY_PATTERN", "READ_COUNT", "Producer", "Waiters",
    "decode_entry", "owner_key", "session_keys", "session_of", "streams_key",
]

log = logging.getLogger("chatapp.broker.redis")

NOTIFY_PATTERN = "chatapp:*:notify"
#: How long a producer's liveness key lives; it is refreshed three times as often.
LIVENESS_SECONDS = 3.0
#: At most one write of a turn's events per this many seconds: at full speed tokens
#: gather into batches; a token after a quiet spell still goes out at once.
MIN_WRITE_INTERVAL = 0.002
#: The most events one stream entry holds; more are split over several entries.
BATCH_MAX = 128
#: Entries per read: at most 1,024 events, so a reader owed a long reply gets it in
#: parts and never holds Events for all of it at once.
READ_COUNT = 8
# The field names of an entry's events, made once rather than per event.
_NAME_FIELDS = [f"e{i}" for i in range(BATCH_MAX)]
_DATA_FIELDS = [f"d{i}" for i in range(BATCH_MAX)]
_NAME_KEYS = [name.encode() for name in _NAME_FIELDS]
_DATA_KEYS = [name.encode() for name in _DATA_FIELDS]


def session_keys(session_id: str) -> dict[str, str]:
    tag = f"chatapp:{{{session_id}}}"
    return {
        "meta": f"{tag}:meta",
        "messages": f"{tag}:messages",
        "events": f"{tag}:events",
        "alive": f"{tag}:alive",
        "cancel": f"{tag}:cancel",
        "notify": f"{tag}:notify",
    }


def owner_key(owner: str) -> str:
    return f"chatapp:owner:{owner}"


def streams_key(owner: str) -> str:
    return f"chatapp:streams:{owner}"


def session_of(channel: str) -> str | None:
    start, end = channel.find("{"), channel.find("}")
    return channel[start + 1 : end] if 0 <= start < end else None


class Waiters:
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
                    pubsub.psubscribe(NOTIFY_PATTERN)
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
                session_id = session_of(message["channel"].decode())
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


class Producer:
    """Batches one turn's events: what arrives while a write is in flight goes next."""

    def __init__(self, broker: RedisBroker, turn: TurnHandle, after: str, owner: str) -> None:
        self.broker = broker
        self.turn = turn
        self.keys = session_keys(turn.session_id)
        self.owner_key = owner_key(owner)
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
                    for start in range(0, len(batch), BATCH_MAX):
                        entry_id, fields = self.entry(batch[start : start + BATCH_MAX])
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
                time.sleep(MIN_WRITE_INTERVAL)

    def close(self) -> None:
        """Wait until everything added is written, then stop."""
        self.done.set()
        self.wanted.set()
        self.idle.wait(30)


def decode_entry(entry_id: str, fields: dict[bytes, bytes], after: tuple[int, int]) -> list[Event]:
    """The events of one stream entry that come after ``after``."""
    count = int(fields[b"n"])
    ms, last_seq = parse_event_id(entry_id)
    first_seq = last_seq - count + 1
    events = []
    for index in range(max(0, after[1] - first_seq + 1) if after[0] == ms else 0, count):
        if (ms, first_seq + index) <= after:
            continue
        if index < BATCH_MAX:
            name, data = fields[_NAME_KEYS[index]], fields[_DATA_KEYS[index]]
        else:  # an entry larger than this version writes
            name, data = fields[f"e{index}".encode()], fields[f"d{index}".encode()]
        events.append(Event(f"{ms}-{first_seq + index}", name.decode(), data.decode()))
    return events
