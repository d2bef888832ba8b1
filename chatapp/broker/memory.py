"""The embedded broker: everything in this process's memory.

One process only: a second gunicorn worker would hold different sessions, so the
gunicorn config refuses to start several workers with it. It uses :mod:`threading`
primitives, which gevent's monkey-patching turns into greenlet-aware ones, so the same
code blocks a greenlet under gunicorn's gevent worker and a thread under gthread.

Everything it holds is counted in bytes as it is stored: each session's history (the
budgets per session and per owner), and, for the budget of the whole process
(``max_bytes``), the event logs and what Python adds around every object. Past that
budget, new sessions and messages are refused with 503 ``server_busy`` before the
process grows further.
"""

from __future__ import annotations

import secrets
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from .._concurrency import plain_lock
from ..errors import ConflictError, PayloadTooLargeError, ServiceUnavailableError, SessionNotFoundError
from ..events import Draft, Event, parse_event_id
from ..sse import encode_event
from .base import (
    HISTORY_FULL,
    HISTORY_TOO_LARGE,
    QUOTA_EXCEEDED,
    Broker,
    HistoryPage,
    Message,
    Reader,
    SessionInfo,
    TurnHandle,
    page_of,
    stale_resume,
    stored_size,
)

__all__ = ["MemoryBroker"]

_SWEEP_EVERY_SECONDS = 60.0
#: The most events one read returns. A reader owed a long reply gets it in parts, so it
#: never holds Events for all of it at once (a reader who stopped reading would keep them).
_READ_MAX = 1024

# What Python holds beyond the counted bytes, measured on CPython 3.11 and rounded up so
# that the count stays above the real size: a session (its object, lock-free Event,
# lists and index entries), a history message (its object, id and string headers), a
# logged event (its tuple, id, key and string headers, besides its data and frame).
_SESSION_COST = 2048
_MESSAGE_COST = 256
_EVENT_COST = 384
#: How long a refusal for a full process asks clients to wait.
_BUSY_RETRY_SECONDS = 30


class _Session:
    __slots__ = (
        "changed",
        "deleted",
        "dropped",
        "event_costs",
        "events",
        "keys",
        "last_key",
        "log_cost",
        "messages",
        "owner",
        "size",
        "touched",
        "turn",
        "turn_start",
        "waiting",
    )

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.messages: list[Message] = []
        #: The history's :func:`stored_size`, and the log's cost to this process.
        self.size = 0
        self.log_cost = 0
        self.event_costs: list[int] = []
        # The log keeps the previous turn and the current one, so a slow reader of the
        # previous turn still finds its ``end`` after the next turn has begun. Each entry
        # is a plain ``(id, event, data, frame)`` tuple rather than an :class:`Event`:
        # tuples of strings leave the garbage collector's lists after its first look, so
        # thousands of logged events cost no collection time; readers get Events.
        self.events: list[tuple[str, str, str, bytes]] = []
        self.keys: list[tuple[int, int]] = []
        # How many entries were dropped from the front: positions readers keep are
        # counted from the session's first event ever, so they survive the trim.
        self.dropped = 0
        self.turn_start = 0
        self.last_key = (0, 0)
        self.turn: TurnHandle | None = None
        # Readers wait on this; a publish sets it and installs a fresh one, which wakes
        # every waiting reader at once with no polling.
        self.changed = threading.Event()
        # Whether a reader waits on ``changed``: a publish with nobody waiting (readers
        # still busy writing the previous batch) then costs no new Event and no wake-up.
        self.waiting = False
        self.deleted = False
        self.touched = time.monotonic()

    def wake_readers(self) -> None:
        if not self.waiting:
            return
        self.waiting = False
        changed, self.changed = self.changed, threading.Event()
        changed.set()


class MemoryBroker(Broker):
    name = "memory"

    def __init__(self, *, session_ttl_seconds: float = 86_400, max_bytes: int | None = None) -> None:
        self._sessions: dict[str, _Session] = {}
        # Session ids by owner, so counting an owner's sessions does not scan them all.
        self._by_owner: dict[str, set[str]] = {}
        self._owner_bytes: dict[str, int] = {}
        self._lock = plain_lock()
        self._ttl = session_ttl_seconds
        self._swept = time.monotonic()
        #: The budget of this process, and what is held against it now.
        self.max_bytes = max_bytes
        self.held = 0

    # -- sessions ---------------------------------------------------------------------

    def create_session(self, owner: str) -> str:
        session_id = secrets.token_urlsafe(16)
        with self._lock:
            self._sweep()
            self._refuse_past_budget(_SESSION_COST)
            self._sessions[session_id] = _Session(owner)
            self._by_owner.setdefault(owner, set()).add(session_id)
            self.held += _SESSION_COST
        return session_id

    def _refuse_past_budget(self, cost: int) -> None:
        if self.max_bytes is not None and self.held + cost > self.max_bytes:
            # Refused before anything is stored: the process stays within its budget
            # (running replies finish, each within its session's budget).
            raise ServiceUnavailableError(
                "The server holds as many chats as it may right now; try again later.",
                code="server_busy",
                retry_after=_BUSY_RETRY_SECONDS,
            )

    def count_sessions(self, owner: str) -> int:
        with self._lock:
            for session_id in list(self._by_owner.get(owner, ())):
                self._live(session_id)
            return len(self._by_owner.get(owner, ()))

    def owner_of(self, session_id: str) -> str | None:
        with self._lock:
            session = self._live(session_id)
            if session is None:
                return None
            # Any request on a session counts as use, as a history read does.
            session.touched = time.monotonic()
            return session.owner

    def is_generating(self, session_id: str) -> bool:
        with self._lock:
            session = self._live(session_id)
            return session is not None and session.turn is not None

    def get_session(self, session_id: str) -> SessionInfo | None:
        with self._lock:
            session = self._live(session_id)
            if session is None:
                return None
            session.touched = time.monotonic()
            return SessionInfo(session_id, session.owner, tuple(session.messages), session.turn is not None)

    def history_page(self, session_id: str, *, before: int | None, limit: int, max_bytes: int) -> HistoryPage | None:
        with self._lock:
            session = self._live(session_id)
            if session is None:
                return None
            session.touched = time.monotonic()
            return page_of(session.messages, session.turn is not None, before=before, limit=limit, max_bytes=max_bytes)

    def owner_bytes(self, owner: str) -> int:
        with self._lock:
            for session_id in list(self._by_owner.get(owner, ())):
                self._live(session_id)
            return self._owner_bytes.get(owner, 0)

    def delete_session(self, session_id: str) -> bool:
        with self._lock:
            if self._live(session_id) is None:
                return False
            self._forget(session_id)
            return True

    def _live(self, session_id: str) -> _Session | None:
        """The session unless it is missing or expired; an expired one is forgotten now."""
        session = self._sessions.get(session_id)
        if session is not None and session.turn is None and time.monotonic() - session.touched > self._ttl:
            self._forget(session_id)
            return None
        return session

    def _forget(self, session_id: str) -> None:
        session = self._sessions.pop(session_id)
        owned = self._by_owner.get(session.owner)
        if owned is not None:
            owned.discard(session_id)
            if not owned:
                del self._by_owner[session.owner]
        self._count(session, -session.size)
        self.held -= _SESSION_COST + session.size + len(session.messages) * _MESSAGE_COST + session.log_cost
        session.deleted = True
        if session.turn is not None:
            session.turn.cancelled.set()
        # Wake every reader, waiting or about to: each finds the session gone.
        session.waiting = True
        session.wake_readers()

    def _sweep(self) -> None:
        # Expired sessions nobody asks for again are found here, at most once a minute.
        now = time.monotonic()
        if now - self._swept < min(_SWEEP_EVERY_SECONDS, self._ttl):
            return
        self._swept = now
        for session_id in list(self._sessions):
            self._live(session_id)

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
        message = Message(_message_id(), "user", text)
        size = stored_size(message)
        with self._lock:
            session = self._require(session_id)
            if session.turn is not None:
                raise ConflictError()
            # The message and its reply must both fit.
            if max_messages is not None and len(session.messages) + 2 > max_messages:
                raise ConflictError(HISTORY_FULL.format(max_messages), code="history_full")
            if max_bytes is not None and session.size + size > max_bytes:
                raise PayloadTooLargeError(HISTORY_TOO_LARGE.format(max_bytes), code="history_too_large")
            if max_owner_bytes is not None and self._owner_bytes.get(session.owner, 0) + size > max_owner_bytes:
                raise PayloadTooLargeError(QUOTA_EXCEEDED.format(max_owner_bytes), code="quota_exceeded")
            self._refuse_past_budget(size + _MESSAGE_COST)
            self._store(session, message)
            drop = session.turn_start
            del session.events[:drop], session.keys[:drop]
            dropped_cost = sum(session.event_costs[:drop])
            del session.event_costs[:drop]
            session.log_cost -= dropped_cost
            self.held -= dropped_cost
            session.dropped += drop
            session.turn_start = len(session.events)
            session.touched = time.monotonic()
            turn = TurnHandle(session_id, _message_id(), tuple(session.messages), owner=session.owner)
            session.turn = turn
            return turn

    def _store(self, session: _Session, message: Message) -> None:
        session.messages.append(message)
        size = stored_size(message)
        session.size += size
        self._count(session, size)
        self.held += size + _MESSAGE_COST

    def _count(self, session: _Session, size: int) -> None:
        """Add ``size`` to the session owner's bytes; an owner at zero is forgotten."""
        total = self._owner_bytes.get(session.owner, 0) + size
        if total > 0:
            self._owner_bytes[session.owner] = total
        else:
            self._owner_bytes.pop(session.owner, None)

    def publish(self, turn: TurnHandle, events: Sequence[Draft]) -> None:
        with self._lock:
            session = self._sessions.get(turn.session_id)
            if session is None or session.turn is not turn:
                return
            self._append(session, events)

    def finish_turn(self, turn: TurnHandle, reply: str, events: Sequence[Draft], *, reasoning: str = "") -> None:
        with self._lock:
            session = self._sessions.get(turn.session_id)
            if session is None or session.turn is not turn:
                return
            if reply or reasoning:
                self._store(session, Message(turn.message_id, "assistant", reply, reasoning or None))
            session.turn = None
            session.touched = time.monotonic()
            self._append(session, events)

    def wake(self, session_id: str) -> None:
        """Wake every reader waiting on ``session_id``."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                session.waiting = True
                session.wake_readers()

    def backlog(self, session_id: str, after: str | None) -> list[Event]:
        if after is None:
            return self.read(session_id, None, 0)
        key = parse_event_id(after)
        with self._lock:
            session = self._require(session_id)
            keys = session.keys
            if not keys:
                return []
            at = bisect_left(keys, key)
            # The id just before a first turn (a reset's) is where that turn starts.
            first_turn = session.turn_start == 0 and key == (0, 0)
            if not first_turn and (at == len(keys) or keys[at] != key):
                # Not an event of this log (older than what is kept, or an earlier log's):
                # resuming after it would skip what the reader never got.
                turn = self._events_after(session, None, None)
                before = session.events[session.turn_start - 1][0] if session.turn_start > 0 else "0-0"
                return stale_resume(before, turn)
        return self.read(session_id, after, 0)

    def request_cancel(self, session_id: str) -> bool:
        with self._lock:
            session = self._require(session_id)
            if session.turn is None:
                return False
            session.turn.cancelled.set()
            return True

    def _append(self, session: _Session, events: Sequence[Draft]) -> None:
        # Once per token: ids are "<ms>-<seq>", the sequence counting within a millisecond.
        now = time.time_ns() // 1_000_000
        ms, seq = session.last_key
        added = 0
        for name, data in events:
            if now > ms:
                ms, seq = now, 0
            else:
                seq += 1
            event_id = f"{ms}-{seq}"
            frame = encode_event(name, event_id, data)
            session.events.append((event_id, name, data, frame))
            session.keys.append((ms, seq))
            # The data is text (up to 4 bytes a character in memory), the frame bytes.
            cost = _EVENT_COST + 4 * len(data) + len(frame)
            session.event_costs.append(cost)
            added += cost
        session.log_cost += added
        self.held += added
        session.last_key = (ms, seq)
        if session.waiting:
            session.wake_readers()

    # -- readers ----------------------------------------------------------------------

    def reader(self, session_id: str) -> Reader:
        return _MemoryReader(self, session_id)

    def read(self, session_id: str, after: str | None, timeout: float, place: list | None = None) -> list[Event]:
        """See :meth:`Broker.read`. ``place`` is a reader's ``[last id, position]``."""
        with self._lock:
            session = self._require(session_id)
            # Take the waiter before looking, so a publish in between still wakes us.
            changed = session.changed
            events = self._events_after(session, after, place)
            if events or timeout <= 0:
                return events
            session.waiting = True
        if not changed.wait(timeout):
            # Not set, so nothing was published and the session is still there (both
            # set it): a quiet period, which costs no second look (a heartbeat's path).
            return []
        with self._lock:
            if session.deleted:
                raise SessionNotFoundError()
            return self._events_after(session, after, place)

    @staticmethod
    def _events_after(session: _Session, after: str | None, place: list | None) -> list[Event]:
        start = 0
        if place is not None and after is not None and place[0] == after:
            # The reader asks from where its last read ended: no id to parse or search.
            # (At 0 or below its last event is no longer kept: the rules below apply.)
            start = place[1] - session.dropped
        if start <= 0:
            keys = session.keys
            after_key = None if after is None else parse_event_id(after)
            if after_key is None or not keys or after_key < keys[0]:
                # No id, or one older than everything kept: the reader missed whole turns
                # and gets the latest one from its start, as a fresh reader would.
                start = session.turn_start
            else:
                start = bisect_right(keys, after_key)
        new = tuple.__new__
        events = [new(Event, entry) for entry in session.events[start : start + _READ_MAX]]
        if place is not None and events:
            place[0], place[1] = events[-1].id, session.dropped + start + len(events)
        return events

    def _require(self, session_id: str) -> _Session:
        session = self._live(session_id)
        if session is None:
            raise SessionNotFoundError()
        return session

    def ping(self) -> bool:
        return True


class _MemoryReader(Reader):
    """A reader that remembers where its last read ended."""

    def __init__(self, broker: MemoryBroker, session_id: str) -> None:
        super().__init__(broker, session_id)
        self._memory = broker
        self._place: list = [None, 0]

    def read(self, after: str | None, timeout: float) -> list[Event]:
        return self._memory.read(self.session_id, after, timeout, self._place)

    def wake(self) -> None:
        self._memory.wake(self.session_id)


def _message_id() -> str:
    return "msg_" + secrets.token_urlsafe(12)
