"""The Redis broker: the :class:`~chatapp.broker.base.Broker` contract on Redis.

The design (keys, entries, wake-ups, liveness) is drawn in :mod:`chatapp.broker.redis`.
This module is the one place where Redis's own failures become chatapp errors: a
connection-level failure is a 503 ``broker_unavailable``, a Redis out of memory
(``maxmemory`` reached) a 503 ``broker_full`` logged at most once a minute, anything else
stays a bug. History is stored as UTF-8 JSON, never ``\\u`` escapes.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ... import events
from ..._concurrency import spawn
from ...errors import ConflictError, PayloadTooLargeError, ServiceUnavailableError, SessionNotFoundError
from ...events import Draft, Event, parse_event_id
from ..base import (
    HISTORY_FULL,
    HISTORY_TOO_LARGE,
    QUOTA_EXCEEDED,
    Broker,
    HistoryPage,
    Message,
    Orphan,
    OrphanHandler,
    Reader,
    SessionInfo,
    TurnHandle,
    stale_resume,
)
from . import scripts
from .client import FULL, UNAVAILABLE, RedisError, connect, is_cluster, require
from .entries import decode_entry, entry_fields
from .keys import TURNS_KEY, owner_key, session_keys, streams_key
from .notifications import Notifications
from .reader import RedisReader
from .writer import LIVENESS_SECONDS, EventWriter

__all__ = ["RedisBroker"]

log = logging.getLogger("chatapp.broker.redis")

T = TypeVar("T")

#: Entries per read: at most 1,024 events, so a reader owed a long reply gets it in
#: parts and never holds Events for all of it at once.
READ_COUNT = 8
#: How often each worker looks for running turns whose lease lapsed.
SWEEP_SECONDS = 1.0
#: A turn is taken over at most this many times; then it ends as interrupted.
MAX_TAKEOVERS = 2
#: History messages fetched per round trip while a page fills up to its byte bound.
PAGE_CHUNK = 16
#: A Redis out of memory is logged at most this often; every refusal still answers 503.
FULL_LOG_EVERY_SECONDS = 60.0


class RedisBroker(Broker):
    name = "redis"

    def __init__(self, url: str, *, session_ttl_seconds: int = 86_400, client: Any = None) -> None:
        require()
        # One client per process for every reader and producer.
        self.client = client or connect(url)
        #: On a cluster, wake-ups travel over sharded pub/sub (SPUBLISH to the session's
        #: shard) and scripts run alone rather than inside pipelines.
        self.cluster = is_cluster(self.client)
        self._publish = "SPUBLISH" if self.cluster else "PUBLISH"
        # Milliseconds, for PEXPIRE: a session untouched this long (and with no turn
        # running, whose producer keeps it alive) is gone.
        self._ttl = int(session_ttl_seconds * 1000)
        self._notifications = Notifications(self.client, sharded=self.cluster)
        self._writers: dict[str, EventWriter] = {}
        self._begin = self.client.register_script(scripts.BEGIN)
        self._finish = self.client.register_script(scripts.FINISH)
        self._interrupt = self.client.register_script(scripts.INTERRUPT)
        self._hold_stream = self.client.register_script(scripts.HOLD_STREAM)
        self._renew_stream = self.client.register_script(scripts.RENEW_STREAM)
        self._renew = self.client.register_script(scripts.RENEW)
        self._takeover = self.client.register_script(scripts.TAKEOVER)
        self._release = self.client.register_script(scripts.RELEASE)
        self._orphans: OrphanHandler | None = None
        self._sweeper: threading.Thread | None = None
        self._closed = threading.Event()
        self._quiet = False
        self._append = self.client.register_script(scripts.APPEND)
        self._full_logged = -FULL_LOG_EVERY_SECONDS

    def _call(self, operation: Callable[[], T]) -> T:
        """Run one Redis operation, translating an outage into a 503 for callers."""
        # Any worker that serves anything sweeps for dead turns (started on first use,
        # in the process that uses it: after gunicorn's fork).
        if self._sweeper is None:
            self._start_sweeper()
        try:
            return operation()
        except FULL as exc:
            # Every request would log the same line while Redis stays full: once a minute
            # says it, and each refusal is still a 503 that clients retry.
            now = time.monotonic()
            if now - self._full_logged >= FULL_LOG_EVERY_SECONDS:
                self._full_logged = now
                # The error names keys and values (owners, text): its type only.
                log.warning("redis is out of memory (maxmemory): refusing writes with 503 broker_full (%s)", type(exc).__name__)
            raise ServiceUnavailableError(
                "The chat store is full; try again in a minute.", code="broker_full", retry_after=60
            ) from exc
        except UNAVAILABLE as exc:
            log.warning("redis unavailable: %s", exc)
            raise ServiceUnavailableError("The chat store is unavailable; try again shortly.") from exc

    # -- sessions ---------------------------------------------------------------------

    def create_session(self, owner: str) -> str:
        session_id = secrets.token_urlsafe(16)
        keys = session_keys(session_id)
        now = time.time()

        def create() -> None:
            # One transaction on one server; on a cluster the two keys live in two slots.
            pipe = self.client.pipeline(transaction=not self.cluster)
            pipe.hset(keys.meta, mapping={"owner": owner, "turn": "", "after": "0-0", "prev": "0-0", "created": now})
            pipe.pexpire(keys.meta, self._ttl)
            index = owner_key(owner)
            pipe.zadd(index, {session_id: now})
            pipe.pexpire(index, self._ttl)
            pipe.execute()

        self._call(create)
        self._start_sweeper()
        return session_id

    def owner_of(self, session_id: str) -> str | None:
        keys = session_keys(session_id)

        def fetch() -> Any:
            # One round trip: the owner, and the session's keys kept alive as a use.
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(keys.meta, "owner")
            for key in (keys.meta, keys.messages, keys.events):
                pipe.pexpire(key, self._ttl)
            return pipe.execute()[0]

        owner = self._call(fetch)
        if owner is None:
            return None
        owner = owner.decode()
        # The owner's index lives as long as the owner's newest-used session.
        self._call(lambda: self.client.pexpire(owner_key(owner), self._ttl))
        return str(owner)

    def is_generating(self, session_id: str) -> bool:
        return bool(self._call(lambda: self.client.hget(session_keys(session_id).meta, "turn")))

    def get_session(self, session_id: str) -> SessionInfo | None:
        keys = session_keys(session_id)

        def fetch() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(keys.meta, "owner", "turn")
            pipe.lrange(keys.messages, 0, -1)
            for key in (keys.meta, keys.messages, keys.events):
                pipe.pexpire(key, self._ttl)
            result: list[Any] = pipe.execute()
            return result

        (owner, turn), raw_messages, *_ = self._call(fetch)
        if owner is None:
            return None
        self._call(lambda: self.client.pexpire(owner_key(owner.decode()), self._ttl))
        messages = tuple(Message(**json.loads(m)) for m in raw_messages)
        return SessionInfo(session_id, owner.decode(), messages, bool(turn))

    def history_page(self, session_id: str, *, before: int | None, limit: int, max_bytes: int) -> HistoryPage | None:
        """Reads only the page, from its end backwards, a few messages per round trip."""
        keys = session_keys(session_id)

        def head() -> tuple[Any, int]:
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(keys.meta, "turn")
            pipe.llen(keys.messages)
            turn, length = pipe.execute()
            return turn, int(length)

        turn, length = self._call(head)
        if turn is None:
            return None
        end = length if before is None else max(0, min(before, length))
        start, size = end, 0
        page: list[Message] = []
        while start > 0 and end - start < limit:
            first, last = max(0, start - PAGE_CHUNK, end - limit), start - 1
            chunk: list[bytes] = self._call(functools.partial(self.client.lrange, keys.messages, first, last))
            full = False
            for raw in reversed(chunk):
                size += len(raw)
                if size > max_bytes and page:
                    full = True
                    break
                page.append(Message(**json.loads(raw)))
                start -= 1
            if full or len(chunk) < PAGE_CHUNK:
                break
        page.reverse()
        return HistoryPage(tuple(page), bool(turn), start)

    def owner_bytes(self, owner: str) -> int:
        """The stored size of the owner's sessions, as each one's last turn left it."""
        index = owner_key(owner)

        def total() -> int:
            members = self.client.zrange(index, 0, -1)
            if not members:
                return 0
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.hget(session_keys(member.decode()).meta, "bytes")
            return sum(int(size) for size in pipe.execute() if size is not None)

        return self._call(total)

    def delete_session(self, session_id: str) -> bool:
        keys = session_keys(session_id)

        def delete() -> bool:
            owner = self.client.hget(keys.meta, "owner")
            pipe = self.client.pipeline(transaction=False)
            pipe.execute_command(self._publish, keys.notify, "c")
            # One DEL of the session's keys (one slot); a cluster pipeline takes them one by one.
            pipe.execute_command("DEL", keys.meta, keys.messages, keys.events, keys.alive, keys.cancel)
            if owner is not None:
                pipe.zrem(owner_key(owner.decode()), session_id)
            pipe.execute_command(self._publish, keys.notify, "e")
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
                pipe.exists(session_keys(member.decode()).meta)
            gone = [m for m, exists in zip(members, pipe.execute(), strict=False) if not exists]
            if gone:
                self.client.zrem(index, *gone)
            return len(members) - len(gone)

        return self._call(count)

    # -- turns ------------------------------------------------------------------------

    def begin_turn(
        self,
        session_id: str,
        text: str,
        *,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        max_owner_bytes: int | None = None,
    ) -> TurnHandle:
        keys = session_keys(session_id)
        user = _stored(Message(_message_id(), "user", text))
        reply_id = _message_id()
        lease = secrets.token_hex(8)
        if max_owner_bytes is not None:
            # The owner's sessions live in other slots, so no script can sum them: checked
            # before, like the session count, a burst of posts may pass it by a message.
            owner = self._call(lambda: self.client.hget(keys.meta, "owner"))
            if owner is not None and self.owner_bytes(owner.decode()) + len(user) > max_owner_bytes:
                raise PayloadTooLargeError(QUOTA_EXCEEDED.format(max_owner_bytes), code="quota_exceeded")
        result = self._call(
            lambda: self._begin(
                keys=[keys.meta, keys.messages, keys.events, keys.alive, keys.cancel],
                args=[user, reply_id, self._ttl, int(LIVENESS_SECONDS * 1000), max_messages or 0, max_bytes or 0, lease],
            )
        )
        if result == b"missing":
            raise SessionNotFoundError()
        if result == b"conflict":
            raise ConflictError()
        if result == b"full":
            raise ConflictError(HISTORY_FULL.format(max_messages), code="history_full")
        if result == b"too_large":
            raise PayloadTooLargeError(HISTORY_TOO_LARGE.format(max_bytes), code="history_too_large")
        after, owner, *raw_messages = result
        history = tuple(Message(**json.loads(m)) for m in raw_messages)
        turn = TurnHandle(session_id, reply_id, history, owner=owner.decode())
        self._produce(turn, after.decode(), owner.decode(), lease)
        return turn

    def _produce(self, turn: TurnHandle, after: str, owner: str, lease: str) -> None:
        """Become the turn's producer: its writer, its cancel channel, the sweep's index."""
        self._start_sweeper()
        self._notifications.start()
        self._notifications.add_turn(turn)
        self._writers[turn.message_id] = EventWriter(
            self.client, turn, after=after, owner=owner, ttl_ms=self._ttl, lease=lease, renew=self._renew, append=self._append, cluster=self.cluster
        )
        try:
            self.client.zadd(TURNS_KEY, {turn.session_id: time.time() * 1000 + LIVENESS_SECONDS * 1000})
        except RedisError as exc:
            # The writer's next beat adds it; until then a death goes unswept, not unseen.
            log.warning("running-turn index not updated: %s", type(exc).__name__)

    def publish(self, turn: TurnHandle, events: Sequence[Draft]) -> None:
        writer = self._writers.get(turn.message_id)
        if writer is not None:
            writer.add(events)

    def finish_turn(self, turn: TurnHandle, reply: str, events: Sequence[Draft], *, reasoning: str = "") -> None:
        writer = self._writers.pop(turn.message_id, None)
        self._notifications.discard_turn(turn)
        if writer is None:
            return
        writer.close()
        if turn.superseded:
            return  # another worker finishes it
        keys = session_keys(turn.session_id)
        entry_id, fields = writer.entry(events)
        stored = Message(turn.message_id, "assistant", reply, reasoning or None)
        message = _stored(stored) if reply or reasoning else b""
        self._call(
            lambda: self._finish(
                keys=[keys.meta, keys.messages, keys.events, keys.alive, keys.cancel, keys.notify],
                args=[turn.message_id, message, entry_id, json.dumps(fields), self._ttl, writer.lease, self._publish],
            )
        )
        try:
            self.client.zrem(TURNS_KEY, turn.session_id)
        except RedisError:
            pass  # the sweep drops it when it finds the turn over

    def request_cancel(self, session_id: str) -> bool:
        keys = session_keys(session_id)

        def cancel() -> bool:
            owner, turn = self.client.hmget(keys.meta, "owner", "turn")
            if owner is None:
                raise SessionNotFoundError()
            if not turn:
                return False
            pipe = self.client.pipeline(transaction=False)
            pipe.set(keys.cancel, turn, px=self._ttl)
            pipe.execute_command(self._publish, keys.notify, "c")
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
        return RedisReader(self, session_id, self._notifications, self._read_now, self._producer_running)

    def read(self, session_id: str, after: str | None, timeout: float) -> list[Event]:
        reader = self.reader(session_id)
        try:
            return reader.read(after, timeout)
        finally:
            reader.close()

    def backlog(self, session_id: str, after: str | None) -> list[Event]:
        if after is None:
            return self.read(session_id, None, 0)
        keys = session_keys(session_id)

        def look() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(keys.meta, "after")
            # The entry holding the id, if the log has it: the first at or after it.
            pipe.xrange(keys.events, after, "+", count=1)
            result: list[Any] = pipe.execute()
            return result

        before, found = self._call(look)
        if before is None:
            raise SessionNotFoundError()
        # The id just before the turn (a reset's) is where the turn starts.
        if after != before.decode() and not _holds(found, parse_event_id(after)):
            # Not an event of this log (older than what is kept, or an earlier log's):
            # resuming after it would skip what the reader never got.
            return stale_resume(before.decode(), self.read(session_id, None, 0))
        return self.read(session_id, after, 0)

    def _read_now(self, session_id: str, after: str | None) -> tuple[list[Event], str, bool]:
        """The events after ``after``, where they started, and whether the read was full."""
        keys = session_keys(session_id)

        def fetch() -> tuple[str, Any]:
            start = after
            if start is None:
                meta = self.client.hget(keys.meta, "after")
                if meta is None:
                    raise SessionNotFoundError()
                start = meta.decode()
            streams = self.client.xread({keys.events: start}, count=READ_COUNT)
            # A deleted or expired session has no stream; ask only when nothing came.
            if not streams and not self.client.exists(keys.meta):
                raise SessionNotFoundError()
            return start, streams

        start, streams = self._call(fetch)
        found: list[Event] = []
        start_key = parse_event_id(start)
        count = 0
        for _, entries in streams or ():
            count += len(entries)
            for entry_id, fields in entries:
                found.extend(decode_entry(entry_id.decode(), fields, start_key))
        return found, start, count >= READ_COUNT

    def _producer_running(self, session_id: str) -> bool:
        """Whether a turn is running; a turn whose producer died is taken over here (or
        ended as interrupted when nobody may continue it)."""
        if self._quiet:
            # Stopping: the workers that stay take it over; say it runs.
            return True
        keys = session_keys(session_id)

        def check() -> bool:
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(keys.meta, "turn")
            pipe.exists(keys.alive)
            turn, alive = pipe.execute()
            if not turn or alive:
                return bool(turn)
            turn_id = turn.decode()
            if self._orphans is not None and self._take_over(session_id, turn_id):
                return True
            self._interrupt_turn(session_id, turn_id)
            return False

        return self._call(check)

    def _take_over(self, session_id: str, turn_id: str) -> bool:
        """Claim the orphaned turn and hand it to the handler; False when it must end."""
        assert self._orphans is not None
        keys = session_keys(session_id)
        lease = secrets.token_hex(8)
        claimed = self._takeover(
            keys=[keys.meta, keys.messages, keys.events, keys.alive],
            args=[turn_id, lease, MAX_TAKEOVERS, int(LIVENESS_SECONDS * 1000)],
        )
        if claimed == -1:
            log.warning("turn %s was taken over %d times already; ending it", turn_id, MAX_TAKEOVERS)
            return False
        if not claimed:
            return True  # held, or claimed by another worker just now
        top, _after, owner, *raw_messages = claimed
        history = tuple(Message(**json.loads(m)) for m in raw_messages)
        turn = TurnHandle(session_id, turn_id, history[:-1] if history and history[-1].id == turn_id else history, owner=owner.decode())
        answer, thought = self._partial_reply(session_id)
        self._produce(turn, top.decode(), owner.decode(), lease)
        log.warning("turn %s: its producer died; continuing it here", turn_id)
        spawn(self._orphans, Orphan(turn, answer, thought), name="chatapp-takeover")
        return True

    def _interrupt_turn(self, session_id: str, turn_id: str) -> None:
        """End a turn whose producer died: ``generation_interrupted``, then ``end``, once."""
        keys = session_keys(session_id)
        partial, thought = self._partial_reply(session_id)
        message = _stored(Message(turn_id, "assistant", partial, thought or None)) if partial or thought else b""
        closing = events.interrupted(turn_id)
        self._interrupt(
            keys=[keys.meta, keys.messages, keys.events, keys.alive, keys.cancel, keys.notify],
            args=[turn_id, message, json.dumps(entry_fields(closing)), len(closing), self._publish],
        )

    def hand_over(self, turn: TurnHandle) -> bool:
        writer = self._writers.pop(turn.message_id, None)
        self._notifications.discard_turn(turn)
        if writer is None:
            return False
        # Stop producing first, so nothing of ours lands after the next producer's.
        turn.superseded = True
        turn.cancelled.set()
        writer.close()
        keys = session_keys(turn.session_id)
        try:
            self._release(keys=[keys.alive], args=[writer.lease])
            # Due now: the next sweep of any worker claims it.
            self.client.zadd(TURNS_KEY, {turn.session_id: 0})
        except RedisError as exc:
            # The lease lapses by itself: a takeover a few seconds later.
            log.warning("turn %s not handed over: %s", turn.message_id, type(exc).__name__)
        log.info("turn %s handed over", turn.message_id)
        return True

    # -- the sweep: turns whose producer died, found whether or not anyone reads ----------

    def adopt_orphans(self, handler: OrphanHandler | None) -> None:
        self._orphans = handler

    def quiesce(self) -> None:
        self._quiet = True

    def _start_sweeper(self) -> None:
        if self._sweeper is None and not self._closed.is_set():
            self._sweeper = threading.Thread(target=self._sweep, daemon=True, name="chatapp-redis-sweep")
            self._sweeper.start()

    def _sweep(self) -> None:
        while not self._closed.wait(SWEEP_SECONDS) and not self._quiet:
            try:
                due = self.client.zrangebyscore(TURNS_KEY, "-inf", time.time() * 1000, start=0, num=32)
                for member in due:
                    session_id = member.decode()
                    if not self._producer_running(session_id):
                        self.client.zrem(TURNS_KEY, session_id)
            except (RedisError, ServiceUnavailableError) as exc:
                log.debug("sweep skipped: %s", type(exc).__name__)
            except Exception:
                log.exception("sweep failed")

    def _partial_reply(self, session_id: str) -> tuple[str, str]:
        """The answer and the reasoning the current turn logged so far."""
        keys = session_keys(session_id)
        start = self.client.hget(keys.meta, "after")
        if start is None:
            return "", ""
        entries = self.client.xrange(keys.events, b"(" + start, "+")
        pieces: dict[str, list[str]] = {events.TOKEN: [], events.REASONING: []}
        for entry_id, fields in entries:
            for event in decode_entry(entry_id.decode(), fields, (0, 0)):
                if event.event in pieces:
                    pieces[event.event].append(events.text_of(event))
                elif event.event == events.RESET:
                    # The reply started over: what came before is not part of it.
                    pieces = {events.TOKEN: [], events.REASONING: []}
        return "".join(pieces[events.TOKEN]), "".join(pieces[events.REASONING])

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except RedisError:
            return False

    def close(self) -> None:
        self._closed.set()
        self._notifications.stop()
        self.client.close()


def _holds(entries: list[Any], key: tuple[int, int]) -> bool:
    """Whether the first of ``entries`` (an XRANGE from ``key``) holds the event ``key``."""
    if not entries:
        return False
    entry_id, fields = entries[0]
    ms, last = parse_event_id(entry_id.decode())
    return ms == key[0] and last - int(fields[b"n"]) < key[1] <= last


def _message_id() -> str:
    return "msg_" + secrets.token_urlsafe(12)


def _stored(message: Message) -> bytes:
    """A history message as stored: compact JSON in UTF-8, never ``\\u`` escapes.

    surrogatepass keeps a lone surrogate an upstream may send (JSON allows escaping one)
    from failing the turn; ``json.loads`` reads it back the same way.
    """
    text = json.dumps(message.to_dict(), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass")
