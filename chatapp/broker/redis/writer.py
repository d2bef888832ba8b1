"""One turn's writer: batches its events into stream entries and keeps the turn alive.

What arrives while a write is in flight goes out with the next one, at most one write
per :data:`MIN_WRITE_INTERVAL`: at full speed tokens gather into batches, while a token
after a quiet spell still goes out at once. Between writes, the writer renews the
turn's lease (the keeper's beat), keeps the turn in the index of running turns that every
worker sweeps, and learns of a cancel made on a host whose notification did not reach
this one. A lease found taken by another worker means this producer was thought dead and
its turn taken over: the writer stops, and the turn is marked superseded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from ...errors import ServiceUnavailableError
from ...events import Draft, parse_event_id
from ..base import TurnHandle
from .client import RedisError
from .entries import BATCH_MAX, entry_fields
from .keys import TURNS_KEY, owner_key, session_keys

__all__ = ["LIVENESS_SECONDS", "MIN_WRITE_INTERVAL", "EventWriter"]

log = logging.getLogger("chatapp.broker.redis")

#: How long a producer's liveness key lives; it is refreshed three times as often.
LIVENESS_SECONDS = 3.0
#: At most one write of a turn's events per this many seconds.
MIN_WRITE_INTERVAL = 0.002


class EventWriter:
    """Writes one turn's events in batches from a thread of its own, until closed."""

    def __init__(
        self,
        client: Any,
        turn: TurnHandle,
        *,
        after: str,
        owner: str,
        ttl_ms: int,
        lease: str,
        renew: Any,
        append: Any,
        cluster: bool = False,
    ) -> None:
        """``renew`` and ``append``: the registered :data:`~.scripts.RENEW` and
        :data:`~.scripts.APPEND` scripts."""
        self._client = client
        self._append = append
        self._turn = turn
        #: This producer's lease token, and the script that renews it (scripts.RENEW).
        self.lease = lease
        self._renew = renew
        # A cluster refuses scripts inside pipelines and wakes readers over sharded pub/sub.
        self._cluster = cluster
        self._publish = "SPUBLISH" if cluster else "PUBLISH"
        self._keys = session_keys(turn.session_id)
        self._owner_key = owner_key(owner)
        self._ttl_ms = ttl_ms
        self._last = parse_event_id(after)
        self._pending: list[Draft] = []
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._done = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._failed: BaseException | None = None
        threading.Thread(target=self._run, daemon=True, name="chatapp-redis-writer").start()

    def add(self, events: Sequence[Draft]) -> None:
        if self._turn.superseded:
            return  # another worker carries the turn now
        if self._failed is not None:
            raise ServiceUnavailableError("The event log cannot be written.")
        with self._lock:
            self._pending.extend(events)
            self._idle.clear()
        self._wanted.set()

    def entry(self, events: Sequence[Draft]) -> tuple[str, list[str]]:
        """The id and fields of the next entry holding ``events``, ids taken in order."""
        ms = time.time_ns() // 1_000_000
        last_ms, last_seq = self._last
        ms, seq = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        self._last = (ms, seq + len(events) - 1)
        return f"{ms}-{seq + len(events) - 1}", entry_fields(events)

    def close(self) -> None:
        """Wait until everything added is written, then stop."""
        self._done.set()
        self._wanted.set()
        self._idle.wait(30)

    def _run(self) -> None:
        keys = self._keys
        lease_ms = int(LIVENESS_SECONDS * 1000)
        # Often enough for the lease and for the session's own expiry.
        refresh_every = min(LIVENESS_SECONDS, self._ttl_ms / 1000) / 3
        refreshed = time.monotonic()
        while True:
            self._wanted.wait(refresh_every)
            self._wanted.clear()
            with self._lock:
                batch, self._pending = self._pending, []
            finishing = self._done.is_set()
            now = time.monotonic()
            refresh = not finishing and now - refreshed >= refresh_every
            try:
                if batch and now - refreshed >= 2 * refresh_every and not self._renewed(keys, lease_ms):
                    # This process stalled long enough for its lease to lapse, and another
                    # worker claimed the turn: write nothing more.
                    self._superseded()
                    return
                if refresh and self._cluster and not self._renewed(keys, lease_ms):
                    self._superseded()
                    return
                renewed: Any = 1
                appended: Any = 1
                entries: list[Any] = [self._ttl_ms, self.lease]
                for start in range(0, len(batch), BATCH_MAX):
                    entry_id, fields = self.entry(batch[start : start + BATCH_MAX])
                    entries += [entry_id, len(fields), *fields]
                if batch and self._cluster:
                    # A cluster refuses scripts inside pipelines: the entries go first, alone.
                    appended = self._append(keys=[keys.meta, keys.events], args=entries)
                if batch or refresh:
                    pipe = self._client.pipeline(transaction=False)
                    if refresh and not self._cluster:
                        self._renew(keys=[keys.meta, keys.alive], args=[self.lease, lease_ms], client=pipe)
                    if batch and not self._cluster:
                        self._append(keys=[keys.meta, keys.events], args=entries, client=pipe)
                    if batch:
                        pipe.execute_command(self._publish, keys.notify, "e")
                    if refresh:
                        # A running turn keeps its session from expiring and stays in the
                        # index every worker sweeps for turns whose producer died.
                        for key in (keys.meta, keys.messages, keys.events, self._owner_key):
                            pipe.pexpire(key, self._ttl_ms)
                        pipe.zadd(TURNS_KEY, {self._turn.session_id: time.time() * 1000 + lease_ms})
                        pipe.get(keys.cancel)
                        refreshed = now
                    results = pipe.execute()
                    at = 0
                    if refresh and not self._cluster:
                        renewed, at = results[0], 1
                    if batch and not self._cluster:
                        appended = results[at]
                    if refresh and results[-1] is not None and results[-1].decode() == self._turn.message_id:
                        self._turn.cancelled.set()
                if appended == -1 or not renewed:
                    self._superseded()
                    return
                if appended == 0:
                    # The session was deleted: nothing more to write for it.
                    self._turn.cancelled.set()
            except RedisError as exc:
                # Includes a refused XADD id: readers declared this producer dead.
                log.warning("turn %s: event log write failed: %s", self._turn.message_id, exc)
                self._failed = exc
                self._turn.cancelled.set()
            with self._lock:
                if not self._pending or self._failed is not None:
                    self._idle.set()
            if self._failed is not None or (finishing and self._idle.is_set()):
                return
            if batch and not finishing:
                time.sleep(MIN_WRITE_INTERVAL)

    def _renewed(self, keys: Any, lease_ms: int) -> bool:
        return bool(self._renew(keys=[keys.meta, keys.alive], args=[self.lease, lease_ms], client=self._client))

    def _superseded(self) -> None:
        log.warning("turn %s: another worker took it over; this producer stops", self._turn.message_id)
        self._turn.superseded = True
        self._turn.cancelled.set()
        with self._lock:
            self._pending = []
        self._idle.set()
