"""A stream reader on Redis: reads the event log only after a wake-up, never polls.

Registered with the process's :class:`~.notifications.Notifications` from open to close,
a reader reads Redis once per published batch rather than on every call. While a turn
runs and nothing arrives, it looks once a liveness period for a dead producer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ...events import Event
from ..base import Broker, Reader
from .notifications import Notifications
from .writer import LIVENESS_SECONDS

__all__ = ["ReadNow", "RedisReader"]

#: Reads the events after an id: ``(events, where they started, whether the read was full)``.
ReadNow = Callable[[str, "str | None"], "tuple[list[Event], str, bool]"]


class RedisReader(Reader):
    def __init__(
        self,
        broker: Broker,
        session_id: str,
        notifications: Notifications,
        read_now: ReadNow,
        producer_running: Callable[[str], bool],
    ) -> None:
        super().__init__(broker, session_id)
        self._notifications = notifications
        self._read_now = read_now
        self._producer_running = producer_running
        self._woken = threading.Event()
        # The first read always looks: something may have come before registering.
        self._woken.set()
        self._poked = False
        notifications.add_reader(session_id, self._woken)

    def read(self, after: str | None, timeout: float) -> list[Event]:
        self._notifications.start()
        woken = self._woken
        deadline = time.monotonic() + timeout
        check_every = LIVENESS_SECONDS
        while True:
            if woken.is_set():
                # Cleared before reading, so a publish during the read wakes us again.
                woken.clear()
                events, after, full = self._read_now(self.session_id, after)
                if full:
                    # A full read may have left entries behind: the next read looks again.
                    woken.set()
                if events or self._poked:
                    self._poked = False
                    return events
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            # While a turn runs, wake once a liveness period to notice a dead producer.
            if not woken.wait(min(remaining, check_every)) and not self._producer_running(self.session_id):
                check_every = timeout

    def wake(self) -> None:
        self._poked = True
        self._woken.set()

    def close(self) -> None:
        self._notifications.discard_reader(self.session_id, self._woken)
