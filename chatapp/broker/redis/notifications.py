"""One pattern subscription per worker process, fanned out to its readers and turns.

Producers ``PUBLISH`` to a session's ``notify`` channel: ``e`` after writing events
(wakes this process's readers of that session, which then read the stream from pooled
connections) and ``c`` to cancel (sets the ``cancelled`` flag of the turn running here).
So a worker holds a few Redis connections whatever the number of open streams, and
nothing polls.

On a Redis Cluster a pattern cannot follow sharded channels, so the listener holds one
sharded subscription (SSUBSCRIBE) per session that has a reader or a turn here, taken
before the reader's first read and dropped with the last of them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..base import TurnHandle
from .client import RedisError
from .keys import NOTIFY_PATTERN, session_keys, session_of

__all__ = ["Notifications"]

log = logging.getLogger("chatapp.broker.redis")


class Notifications:
    """The listener thread, and who to tell: readers' wake-up flags and running turns."""

    def __init__(self, client: Any, *, sharded: bool = False) -> None:
        self._client = client
        self._sharded = sharded
        # Sharded mode: the sessions wanted, the channels subscribed, and each wanted
        # session's confirmation (set by the listener once the subscription took effect).
        self._wanted: dict[str, threading.Event] = {}
        self._subscribed: set[str] = set()
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

    # -- readers ----------------------------------------------------------------------

    def add_reader(self, session_id: str, woken: threading.Event) -> None:
        with self._lock:
            self._readers.setdefault(session_id, set()).add(woken)
        self._want(session_id)

    def discard_reader(self, session_id: str, woken: threading.Event) -> None:
        with self._lock:
            readers = self._readers.get(session_id)
            if readers is not None:
                readers.discard(woken)
                if not readers:
                    del self._readers[session_id]
        self._unwant(session_id)

    def _want(self, session_id: str) -> None:
        """Sharded mode: subscribe to the session's channel and wait until it holds."""
        if not self._sharded:
            return
        self.start()
        with self._lock:
            confirmed = self._wanted.get(session_id)
            if confirmed is None:
                confirmed = self._wanted[session_id] = threading.Event()
        # A wake-up sent before the subscription holds would be lost.
        confirmed.wait(5)

    def _unwant(self, session_id: str) -> None:
        if not self._sharded:
            return
        with self._lock:
            if session_id in self._readers or session_id in self._turns:
                return
            self._wanted.pop(session_id, None)

    def _wake(self, session_id: str) -> None:
        with self._lock:
            readers = list(self._readers.get(session_id, ()))
        for woken in readers:
            woken.set()

    def _wake_all(self) -> None:
        with self._lock:
            readers = [woken for group in self._readers.values() for woken in group]
        for woken in readers:
            woken.set()

    # -- turns ------------------------------------------------------------------------

    def add_turn(self, turn: TurnHandle) -> None:
        with self._lock:
            self._turns[turn.session_id] = turn
        self._want(turn.session_id)

    def discard_turn(self, turn: TurnHandle) -> None:
        with self._lock:
            if self._turns.get(turn.session_id) is turn:
                del self._turns[turn.session_id]
        self._unwant(turn.session_id)

    def _cancel(self, session_id: str) -> None:
        turn = self._turns.get(session_id)
        if turn is not None:
            turn.cancelled.set()

    # -- the listener -----------------------------------------------------------------

    def _listen(self) -> None:
        pubsub = self._client.pubsub()
        backoff = 0.1
        while not self._stopped:
            try:
                if self._sharded:
                    self._follow_wanted(pubsub)
                    if not self._subscribed:
                        # Nothing to listen to: with no subscription the call below
                        # returns at once, and this loop must not spin.
                        time.sleep(0.05)
                        continue
                    started = time.monotonic()
                    message = pubsub.get_sharded_message(timeout=0.25)
                    if message is None and time.monotonic() - started < 0.01:
                        time.sleep(0.01)
                else:
                    if not pubsub.patterns:
                        pubsub.psubscribe(NOTIFY_PATTERN)
                    message = pubsub.get_message(timeout=0.25)
                backoff = 0.1
            except (RedisError, OSError, ValueError) as exc:
                if self._stopped:
                    break
                log.warning("notification channel lost (%s); retrying", type(exc).__name__)
                self._ready.clear()
                if self._sharded:
                    # A node failed over: subscribe afresh, wherever the slots are now.
                    try:
                        pubsub.close()
                    except Exception:
                        pass
                    pubsub = self._client.pubsub()
                    self._subscribed.clear()
                # Whatever was published meanwhile is lost: let every reader look again.
                self._wake_all()
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if message is None:
                continue
            kind = message["type"]
            if kind == "psubscribe":
                self._ready.set()
                self._wake_all()
            elif kind == "ssubscribe":
                self._confirm(session_of(message["channel"].decode()))
            elif kind in ("pmessage", "smessage"):
                session_id = session_of(message["channel"].decode())
                if session_id is None:
                    continue
                if message["data"] == b"c":
                    self._cancel(session_id)
                else:
                    self._wake(session_id)
        pubsub.close()

    def _follow_wanted(self, pubsub: Any) -> None:
        """Sharded mode: bring the subscriptions in line with the sessions wanted."""
        if self._sharded:
            self._ready.set()
        with self._lock:
            wanted = set(self._wanted)
            # Wanted again before the listener let go: the subscription still holds.
            held = [self._wanted[sid] for sid in wanted & self._subscribed if not self._wanted[sid].is_set()]
        for confirmed in held:
            confirmed.set()
        for session_id in wanted - self._subscribed:
            pubsub.ssubscribe(session_keys(session_id).notify)
            self._subscribed.add(session_id)
        for session_id in self._subscribed - wanted:
            pubsub.sunsubscribe(session_keys(session_id).notify)
            self._subscribed.discard(session_id)

    def _confirm(self, session_id: str | None) -> None:
        if session_id is None:
            return
        with self._lock:
            confirmed = self._wanted.get(session_id)
        if confirmed is not None:
            confirmed.set()
            # The subscription holds now; anything published before it is in the log.
            self._wake(session_id)

    def stop(self) -> None:
        self._stopped = True
        if self._thread is not None:
            self._thread.join(3)
