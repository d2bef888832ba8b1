"""One pattern subscription per worker process, fanned out to its readers and turns.

Producers ``PUBLISH`` to a session's ``notify`` channel: ``e`` after writing events
(wakes this process's readers of that session, which then read the stream from pooled
connections) and ``c`` to cancel (sets the ``cancelled`` flag of the turn running here).
So a worker holds a few Redis connections whatever the number of open streams, and
nothing polls.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..base import TurnHandle
from .client import RedisError
from .keys import NOTIFY_PATTERN, session_of

__all__ = ["Notifications"]

log = logging.getLogger("chatapp.broker.redis")


class Notifications:
    """The listener thread, and who to tell: readers' wake-up flags and running turns."""

    def __init__(self, client: Any) -> None:
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

    # -- readers ----------------------------------------------------------------------

    def add_reader(self, session_id: str, woken: threading.Event) -> None:
        with self._lock:
            self._readers.setdefault(session_id, set()).add(woken)

    def discard_reader(self, session_id: str, woken: threading.Event) -> None:
        with self._lock:
            readers = self._readers.get(session_id)
            if readers is not None:
                readers.discard(woken)
                if not readers:
                    del self._readers[session_id]

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

    def discard_turn(self, turn: TurnHandle) -> None:
        with self._lock:
            if self._turns.get(turn.session_id) is turn:
                del self._turns[turn.session_id]

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
            elif kind == "pmessage":
                session_id = session_of(message["channel"].decode())
                if session_id is None:
                    continue
                if message["data"] == b"c":
                    self._cancel(session_id)
                else:
                    self._wake(session_id)
        pubsub.close()

    def stop(self) -> None:
        self._stopped = True
        if self._thread is not None:
            self._thread.join(3)
